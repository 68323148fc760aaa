"""The kit's own prompt set, mirroring Spec-Bench's six categories (multi-turn conversation,
translation, summarization, question answering, mathematical reasoning, retrieval-augmented
generation). Written for the kit; 12 prompts per category. Items: {"id", "category", "turns"}."""
from mtp.eval_suites.passages import PASSAGES

_MULTI_TURN = [
    ("Write a short note to a neighbour asking them to water your plants while you are away for a week.",
     "Now make the note more formal and add a line offering to return the favour."),
    ("Explain what a hash table is to someone who has never programmed.",
     "Give a concrete everyday analogy and say when a hash table is a bad choice."),
    ("Plan a three-day trip to a mountain town for a family with two young children.",
     "Rewrite the plan for a rainy weekend, keeping the same town."),
    ("List five tips for writing clear emails at work.",
     "Turn the tips into a short checklist someone could print and keep by their desk."),
    ("Describe the water cycle in a paragraph suitable for a ten-year-old.",
     "Now write three quiz questions about your paragraph, with answers."),
    ("Suggest a weekly exercise routine for a beginner who has thirty minutes a day.",
     "Adjust the routine for someone with a sore knee."),
    ("Write a four-line poem about autumn leaves.",
     "Write a second verse that continues the poem, keeping the same rhyme scheme."),
    ("What are the pros and cons of working from home?",
     "Summarize your answer in exactly two sentences."),
    ("Draft a product description for a reusable water bottle made of steel.",
     "Shorten it to fit in a tweet of at most 280 characters."),
    ("Explain the difference between weather and climate.",
     "Give two examples of each to make the difference clear."),
    ("Write a Python function that returns the n-th Fibonacci number.",
     "Now rewrite it so that it runs in linear time and explain why it is faster."),
    ("Give me a simple recipe for tomato soup.",
     "How would you change the recipe to make it vegan and a little spicy?"),
]

_TRANSLATION = [
    ("French", "The museum is closed on Mondays, but the garden stays open until seven in the evening."),
    ("German", "Could you please tell me where the nearest train station is?"),
    ("Spanish", "We have been waiting for the bus for more than twenty minutes."),
    ("Italian", "My grandmother taught me how to make fresh pasta when I was a child."),
    ("Portuguese", "The meeting has been moved to Thursday afternoon because the manager is travelling."),
    ("Dutch", "It rained all weekend, so we stayed at home and played board games."),
    ("English", "Le chat dort sur le canapé depuis ce matin et refuse de bouger."),
    ("English", "Ich habe das Buch gestern Abend zu Ende gelesen und es hat mir sehr gefallen."),
    ("English", "El restaurante de la esquina sirve el mejor pescado de la ciudad."),
    ("French", "Please remember to turn off the lights and lock the door when you leave."),
    ("German", "The children built a large sandcastle on the beach this morning."),
    ("Spanish", "This software update fixes several security problems and improves battery life."),
]

_SUMMARIZATION_INSTRUCTIONS = [
    "Summarize the following text in two sentences.",
    "Write a one-paragraph summary of the text below for a newsletter.",
    "Summarize the main facts of this text as a bulleted list.",
]

_QA = [
    "Why is the sky blue?",
    "What causes the seasons on Earth?",
    "How does a vaccine help the body fight disease?",
    "What is the difference between a virus and a bacterium?",
    "Why do we have leap years?",
    "How do airplanes stay in the air?",
    "What is inflation and why does it matter?",
    "Why does ice float on water?",
    "What does a CPU do in a computer?",
    "How do plants make their food?",
    "What is the purpose of the stock market?",
    "Why do cats purr?",
]

_MATH = [
    "A baker makes 24 muffins and sells them in boxes of 4. Each box costs 6 dollars. How much money does she "
    "earn if she sells all the muffins? Think step by step.",
    "Tom has 3 times as many marbles as Anna. Together they have 48 marbles. How many marbles does Tom have? "
    "Show your reasoning.",
    "A train travels 180 kilometres in 2 hours and then 120 kilometres in 1.5 hours. What is its average speed "
    "over the whole trip? Explain each step.",
    "A rectangle is 3 metres longer than it is wide and its perimeter is 26 metres. What are its length and "
    "width? Solve step by step.",
    "A shop gives a 20 percent discount on a jacket that costs 85 dollars, then adds 10 percent tax on the "
    "discounted price. What is the final price? Show the calculation.",
    "Lisa reads 15 pages on Monday and each day after that she reads 5 more pages than the day before. How many "
    "pages has she read by the end of Friday? Think step by step.",
    "A tank holds 600 litres. One pipe fills it in 30 minutes and another empties it in 60 minutes. If both are "
    "open, how long does it take to fill the empty tank? Explain.",
    "The sum of three consecutive even numbers is 78. What are the numbers? Show your work.",
    "A farmer has chickens and cows. There are 30 heads and 74 legs in total. How many cows are there? Solve "
    "step by step.",
    "If 5 workers build a wall in 12 days, how many days would 6 workers need at the same rate? Explain your "
    "reasoning.",
    "A recipe needs 250 grams of flour for 10 cookies. How much flour is needed for 36 cookies? Show the steps.",
    "A car's value drops by 15 percent each year. It costs 20,000 dollars new. What is it worth after two "
    "years? Think step by step.",
]

# (passages shown, question): the first passage listed holds the answer
_RAG = [
    ((0, 3, 5), "In which year was the town of Ostrel founded?"),
    ((1, 4, 6), "Why did the Meridian Bridge open later than planned?"),
    ((2, 7, 0), "What temperature is the Tarsi glaze fired at, and for how long does a firing take?"),
    ((3, 1, 2), "How much extra sleep did blackout curtains give the nurses?"),
    ((4, 5, 7), "What did many Ferrow Valley growers install after the frost of 2021, and why?"),
    ((5, 0, 3), "When is the Kessler telescope closed, and what happens then?"),
    ((6, 2, 4), "Who designed the Orlan alphabet and in which year?"),
    ((7, 6, 1), "How many trips did Nessa's water taxis carry in 2023?"),
    ((1, 7, 5), "What separates the cycle path on the Meridian Bridge from the traffic?"),
    ((4, 0, 6), "Which two apple varieties are grown in the Ferrow Valley, and when is each picked?"),
    ((7, 3, 2), "What happens to the water-taxi service during strong storms?"),
    ((6, 5, 4), "What share of children in the Vey peninsula grow up speaking Orlan at home today?"),
]


def _documents(indices) -> str:
    return "\n\n".join(f"Document {n + 1} ({PASSAGES[i][0]}):\n{PASSAGES[i][1]}" for n, i in enumerate(indices))


def build() -> list[dict]:
    items: list[dict] = []
    for i, (t1, t2) in enumerate(_MULTI_TURN):
        items.append({"id": f"multi-turn-{i:02d}", "category": "multi-turn", "turns": [t1, t2]})
    for i, (lang, text) in enumerate(_TRANSLATION):
        items.append({"id": f"translation-{i:02d}", "category": "translation",
                      "turns": [f"Translate the following sentence into {lang}:\n{text}"]})
    for i in range(12):
        title, body = PASSAGES[i % len(PASSAGES)]
        instr = _SUMMARIZATION_INSTRUCTIONS[i % len(_SUMMARIZATION_INSTRUCTIONS)]
        items.append({"id": f"summarization-{i:02d}", "category": "summarization",
                      "turns": [f"{instr}\n\nTitle: {title}\n\n{body}"]})
    for i, q in enumerate(_QA):
        items.append({"id": f"qa-{i:02d}", "category": "qa", "turns": [q]})
    for i, q in enumerate(_MATH):
        items.append({"id": f"math_reasoning-{i:02d}", "category": "math_reasoning", "turns": [q]})
    for i, (docs, q) in enumerate(_RAG):
        items.append({"id": f"rag-{i:02d}", "category": "rag", "turns": [
            f"Answer the question using only the documents below. Quote the relevant sentence.\n\n"
            f"{_documents(docs)}\n\nQuestion: {q}"]})
    return items
