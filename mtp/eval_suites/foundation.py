"""The foundation benchmark's prompts (eval.bench_foundation, eval.bench_trees; suite "foundation"):
20 short single-turn chat requests; several quote text back so prompt lookup has something to copy."""
from __future__ import annotations

PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Write a haiku about autumn leaves.",
    "Explain what a hash table is to a beginner.",
    "Give me three tips for better sleep.",
    "Translate to French: 'The weather is nice today and we are going to the park.'",
    "Summarize: The city council met on Tuesday to discuss the new park. The park will have a playground, "
    "a pond and walking trails. Construction starts in May and should finish by the end of the year.",
    "Fix the bug in this Python function and return the corrected code:\n"
    "def add_all(xs):\n    total = 0\n    for x in xs:\n        total =+ x\n    return total",
    "Rewrite this sentence in the passive voice: 'The cat chased the mouse across the kitchen floor.'",
    "List the planets of the solar system in order from the sun.",
    "What is 17 times 23? Show your steps.",
    "Write a short email asking a colleague to review my pull request by Friday.",
    "Extract the names from this text: 'Alice met Bob at the station, and later they had lunch with Carol.'",
    "Convert this list to a comma-separated string: apples, bananas, cherries, dates, elderberries.",
    "Repeat the following sentence exactly twice: 'Small models can draft tokens for large models.'",
    "Write a Python function that returns the factorial of n.",
    "What causes the seasons on Earth?",
    "Correct the spelling in: 'Thiss sentense has sum speling misteaks in it.'",
    "Describe the water cycle in four steps.",
    "Write a SQL query that selects the names of all users older than 30 from a table called users.",
    "Give a one-paragraph biography of Ada Lovelace.",
]


def build() -> list[dict]:
    return [{"id": f"foundation-{i:02d}", "category": "chat", "turns": [p]} for i, p in enumerate(PROMPTS)]
