"""Regenerates the kit's built-in prompt set `mtp/data/prompts.jsonl` (deterministic).

    python -m mtp.data.make_prompts            # rewrites the shipped file

Prompts are templates filled from topic lists, one line each: {"id", "category", "turns": [...]}.
Each category mixes several templates so no two prompts in a category read alike.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("prompts.jsonl")

TOPICS = [
    "photosynthesis", "black holes", "the French Revolution", "compound interest", "vaccines",
    "plate tectonics", "the printing press", "machine learning", "climate change", "the immune system",
    "supply and demand", "the water cycle", "electric cars", "the Roman Empire", "quantum computing",
    "honeybees", "coral reefs", "inflation", "the internet", "sleep", "volcanoes", "renewable energy",
    "the human heart", "democracy", "antibiotics", "the Moon landing", "jazz", "coffee", "recycling",
    "earthquakes", "the stock market", "DNA", "the Silk Road", "solar panels", "rainforests",
    "social media", "the Renaissance", "bread baking", "meditation", "3D printing",
]
HOBBIES = ["running", "chess", "gardening", "painting", "learning Spanish", "playing guitar",
           "photography", "cooking", "rock climbing", "birdwatching", "knitting", "cycling"]
PLACES = ["Lisbon", "Kyoto", "a small mountain village", "Cape Town", "Iceland", "New York",
          "the Scottish Highlands", "Buenos Aires", "a quiet beach town", "Vienna"]
CHAT = [
    "Hi! Can you suggest a few ways to get started with {h}?",
    "I have a free weekend in {p}. What would you recommend doing?",
    "What is a good way to stay motivated when {h} gets hard?",
    "Can you recommend three books for someone curious about {t}?",
    "I'm feeling a bit stressed about work. Any quick tips to relax this evening?",
    "What are some fun facts about {t}?",
    "How do I explain {t} to a ten-year-old?",
    "My friend says {h} is boring. How could I convince them to try it?",
    "What should I pack for a three-day trip to {p}?",
    "Give me a short pep talk before my first day of {h} lessons.",
]
WRITING = [
    "Write a short poem about {t}.",
    "Write a haiku about {p}.",
    "Write a four-sentence story about someone who discovers {h}.",
    "Draft a friendly email inviting a colleague to try {h} together.",
    "Write a product description for a guidebook about {p}.",
    "Write an opening paragraph for an essay on {t}.",
    "Write a limerick about {h}.",
    "Write a short diary entry from a traveller arriving in {p}.",
    "Write a catchy slogan for a museum exhibition on {t}.",
    "Write a thank-you note to a teacher who taught you about {t}.",
]
CODE_TASKS = [
    "reverses a string", "checks whether a number is prime", "computes the n-th Fibonacci number",
    "counts the words in a sentence", "removes duplicates from a list while keeping order",
    "finds the largest element of a list", "converts Celsius to Fahrenheit", "checks whether a string is a palindrome",
    "merges two sorted lists", "returns the factorial of n", "flattens a nested list",
    "computes the greatest common divisor of two integers", "sorts a list of words by length",
    "counts the vowels in a string", "returns the median of a list of numbers",
]
LANGS = ["Python", "JavaScript", "C", "Rust", "Go"]
CODE = [
    "Write a {l} function that {c}.",
    "In {l}, how would I write a function that {c}? Include a short example.",
    "Explain step by step how to write code that {c}, then give a {l} version.",
    "Write a unit test in {l} for a function that {c}.",
]
CODE_FIX = [
    "What is wrong with this Python code and how do I fix it?\n\ndef add(a, b):\n    return a - b",
    "Explain what this Python code does:\n\nprint([x * x for x in range(10) if x % 2 == 0])",
    "Why does this loop never end, and how can I fix it?\n\ni = 0\nwhile i < 10:\n    print(i)",
    "Rewrite this code to be more readable:\n\ndef f(l):\n    r=[]\n    for i in l:\n        if i>0: r.append(i*2)\n    return r",
    "What is the difference between a list and a tuple in Python?",
    "Explain recursion with a small code example.",
    "What does the `git rebase` command do, in simple terms?",
    "How do I read a CSV file in Python and print its first five rows?",
]
QA = [
    "What is {t}?",
    "Why is {t} important?",
    "What are the main causes and effects of {t}?",
    "Who first studied {t}, and what did they find?",
    "What are common misconceptions about {t}?",
    "How has {t} changed over the last hundred years?",
    "What is the capital of {c}?",
    "How far is the Earth from the Sun, roughly?",
]
COUNTRIES = ["France", "Japan", "Brazil", "Kenya", "Canada", "Australia", "Egypt", "Norway", "India", "Mexico"]
PASSAGES = [
    "The city council met on Tuesday to discuss the new bicycle lanes. Supporters said the lanes would "
    "make commuting safer and reduce traffic, while some shop owners worried about losing parking spaces. "
    "After two hours of debate the council voted seven to two to build the lanes on three main streets, "
    "with a review planned after one year.",
    "Honeybees communicate the location of flowers through a movement called the waggle dance. The angle "
    "of the dance relative to gravity shows the direction of the food compared with the sun, and the "
    "length of the waggle run tells the other bees how far away it is.",
    "Our quarterly sales rose 12 percent compared with last year, mainly because of strong demand for the "
    "new tablet. Costs also increased, due to higher shipping prices, so profit grew by only 4 percent. "
    "The company expects growth to slow next quarter.",
    "The old lighthouse had stood on the cliff for two hundred years. When the new automatic light was "
    "installed, the keeper, Mara, packed her few belongings, took one last look at the sea, and moved "
    "to the village, where she opened a small museum about the lighthouse.",
    "Regular exercise improves heart health, strengthens muscles and bones, and can lift mood. Experts "
    "recommend at least 150 minutes of moderate activity each week, such as brisk walking or cycling, "
    "plus two sessions of strength training.",
    "The library will close for renovation from March 1 to April 15. During that time, books can be "
    "returned at the community centre, and a small selection of books will be available for loan there. "
    "Online services will continue as usual.",
]
SUMMARY = [
    "Summarize the following text in one sentence:\n\n{x}",
    "Give a short bullet-point summary of this passage:\n\n{x}",
    "What is the main point of this text?\n\n{x}",
    "Summarize this for a busy reader in under 20 words:\n\n{x}",
]
SENTENCES = [
    "Good morning, how are you today?", "Where is the nearest train station?",
    "I would like a cup of coffee, please.", "The weather is beautiful this afternoon.",
    "Thank you very much for your help.", "Can you tell me what time it is?",
    "We are going to the beach tomorrow.", "This book is very interesting.",
    "My sister lives in a big city.", "Please close the window, it is cold.",
]
TARGET_LANGS = ["French", "Spanish", "German", "Italian", "Portuguese"]
TRANSLATE = [
    "Translate to {g}: \"{s}\"",
    "How do you say \"{s}\" in {g}?",
    "Translate this sentence into {g} and explain any tricky words: \"{s}\"",
]
RECORDS = [
    "Anna Schmidt, 34, software engineer, lives in Berlin, email anna.schmidt@example.com",
    "Order #48213: 3 notebooks at $4.50 each, 1 backpack at $29.99, shipped to Leeds on May 2",
    "Meeting with Dr. Lee on Friday at 3 pm in room 204 to review the budget",
    "Flight BA 117 from London to New York departs 08:25 and arrives 11:10 local time",
    "Mr. Tom Baker called at 10:15 about invoice 5531; please call back at 555-0142",
    "The recipe needs 200 g flour, 2 eggs, 100 ml milk and a pinch of salt; bake for 25 minutes",
]
EXTRACT = [
    "Extract the names, dates and numbers from this text as a JSON object:\n\n{r}",
    "List every number in the following text and say what it refers to:\n\n{r}",
    "From this text, extract the key fields as 'field: value' lines:\n\n{r}",
]
MATH = [
    "What is {a} + {b}?", "What is {a} times {b}?", "What is {a} minus {b}?",
    "If a shirt costs ${a} and is discounted by {p} percent, what is the new price?",
    "A train travels {a} km in {h} hours. What is its average speed?",
    "Solve for x: {a}x + {b} = {c}.",
    "What is {p} percent of {a}?",
    "Tom has {a} apples and gives away {b}. How many apples does he have left?",
    "What is the area of a rectangle {a} cm long and {h} cm wide?",
    "Is {a} an even or an odd number? Explain.",
]
MULTI = [
    ["Tell me about {t}.", "Can you summarize that in one sentence?"],
    ["I want to learn {h}. Where should I start?", "What mistakes do beginners usually make?"],
    ["Write a short poem about {t}.", "Now make it funnier."],
    ["What should I see in {p}?", "What about food? Any local dishes I should try?"],
    ["Write a Python function that {c}.", "Now add comments explaining each step."],
    ["Explain {t} simply.", "Give me an everyday example.", "What is one open question about it?"],
]


def build(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out: list[dict] = []

    def add(cat: str, turns: list[str]) -> None:
        out.append({"id": f"{cat}-{sum(r['category'] == cat for r in out):03d}", "category": cat, "turns": turns})

    def fill(tmpl: str) -> str:
        return tmpl.format(t=rng.choice(TOPICS), h=rng.choice(HOBBIES), p=rng.choice(PLACES),
                           c=rng.choice(CODE_TASKS), l=rng.choice(LANGS), x=rng.choice(PASSAGES),
                           s=rng.choice(SENTENCES), g=rng.choice(TARGET_LANGS), r=rng.choice(RECORDS))

    def unique(cat: str, templates: list[str], n: int) -> None:
        seen: set[str] = set()
        tries = 0
        while len(seen) < n and tries < 50 * n:
            tries += 1
            p = fill(rng.choice(templates))
            if p not in seen:
                seen.add(p)
                add(cat, [p])

    unique("chat", CHAT, 60)
    unique("writing", WRITING, 60)
    unique("code", CODE, 48)
    for p in CODE_FIX:
        add("code", [p])
    unique("qa", [q for q in QA if "{c}" not in q and "Earth" not in q], 50)
    for c in COUNTRIES:
        add("qa", [f"What is the capital of {c}, and what is it known for?"])
    unique("summarization", SUMMARY, 24)
    unique("translation", TRANSLATE, 50)
    unique("extraction", EXTRACT, 18)
    seen: set[str] = set()
    while len(seen) < 60:
        t = rng.choice(MATH)
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        p = t.format(a=a, b=b, c=a * rng.randint(1, 9) + b, p=rng.choice([10, 15, 20, 25, 50]), h=rng.randint(2, 6))
        if p not in seen:
            seen.add(p)
            add("math", [p])
    seen_mt: set[str] = set()
    while len(seen_mt) < 50:
        turns = [fill(t) for t in rng.choice(MULTI)]
        if turns[0] not in seen_mt:
            seen_mt.add(turns[0])
            add("multi-turn", turns)
    return out


def main() -> None:
    rows = build()
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    cats: dict[str, int] = {}
    for r in rows:
        cats[r["category"]] = cats.get(r["category"], 0) + 1
    print(f"wrote {len(rows)} prompts to {OUT}: {cats}")


if __name__ == "__main__":
    main()
