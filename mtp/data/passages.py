"""Passage tasks: prompts that carry a text to work on, built from the target's own responses.

Chat prompts alone teach a head to continue a conversation; they never show it a model copying,
condensing or translating a passage it was given, which is most of what summarisation, RAG and
translation prompts ask for (and where prompt lookup, which only copies, beats an undertrained
head). This module turns responses the target already wrote (a `train.distill` folder) into such
prompts, with no text from outside the model and none from any evaluation suite:

    recs = load_distilled("runs/full/data/distill")
    prompts = passage_prompts(recs, tokenizer, 800, questions=load_prompts("runs/full/data/prompts.jsonl"))

Each prompt wraps one response (the passage) in a task template: summarise, answer a question
from it (the question that produced the passage, so the answer is in the context, as in RAG),
translate part of it, rewrite or extract from it, or a two-turn follow-up on it. Responses that
were cut at max_new_tokens or repeat themselves are not used. Deterministic for a fixed seed.
"""
from __future__ import annotations

import random
import re

from mtp.data.prompts import DataError, Prompt

SUMMARIZE = [
    "Summarize this in {n} sentences:\n\n{p}",
    "Give a short summary of the text below.\n\n{p}",
    "What are the key points of this text? Answer as a bulleted list.\n\nText:\n{p}",
    "Condense the following into a single paragraph of at most {w} words.\n\n{p}",
    "Read the passage and write a one-sentence headline for it, then a two-sentence summary.\n\n{p}",
]
RAG = [
    "Use the reference below to answer the question.\n\nReference:\n{p}\n\nQuestion: {q}",
    "Context:\n{p}\n\nBased only on the context above, answer: {q}",
    "Here is a document:\n\"\"\"\n{p}\n\"\"\"\nUsing the document, {q_lower}",
    "Answer the question with information from the notes, and quote the sentence you rely on.\n\n"
    "Notes: {p}\n\nQuestion: {q}",
]
TRANSLATE = [
    "Translate this into {lang}:\n\n{s}",
    "How would you say the following in {lang}?\n\"{s}\"",
    "Please translate the text below to {lang}.\n\n{s}",
]
LANGS = ["French", "Spanish", "German", "Italian", "Portuguese", "Dutch"]
REWRITE = [
    "Rewrite the following text so it is easier to read:\n\n{p}",
    "Fix any grammar or spelling mistakes in this text and return the corrected version:\n\n{p}",
    "Make this text more formal, keeping all of its content:\n\n{p}",
    "Turn this text into a numbered list of steps or facts:\n\n{p}",
]
EXTRACT = [
    "List every name, number and place mentioned in this text:\n\n{p}",
    "Write three questions that this text answers, each followed by its answer.\n\n{p}",
    "Extract the main claim of this passage and the evidence given for it.\n\n{p}",
]
FOLLOW_UPS = [
    "Summarize your answer in two sentences.",
    "Can you explain that again more simply?",
    "Turn your answer into a short checklist.",
    "Which part of your answer is most important, and why?",
    "Rewrite your answer for a ten-year-old.",
]
KINDS = ("summarize", "rag", "translate", "rewrite", "extract", "follow-up")


class NoPassagesError(DataError):
    """No distilled response is usable as a passage."""


def usable_passage(text: str, num_tokens: int, *, min_tokens: int = 40, max_tokens: int = 200,
                   min_distinct: float = 0.6) -> bool:
    """A finished response long enough to work on, mostly words, and not looping (at least
    `min_distinct` of its word trigrams distinct)."""
    if not min_tokens <= num_tokens <= max_tokens:
        return False
    words = re.findall(r"\w+", text.lower())
    if len(words) < 20 or sum(c.isalpha() for c in text) < 0.6 * len(text):
        return False
    tri = list(zip(words, words[1:], words[2:]))
    return len(set(tri)) >= min_distinct * len(tri)


def _first_sentences(text: str, rng: random.Random) -> str:
    parts = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    return " ".join(parts[: rng.choice([1, 2, 2, 3])]).strip()


def passage_prompts(records: list[dict], tokenizer, num_prompts: int, *, seed: int = 0,
                    questions: list[Prompt] | None = None, kinds: tuple[str, ...] = KINDS,
                    min_tokens: int = 40, max_tokens: int = 200) -> list[Prompt]:
    """Up to `num_prompts` passage prompts from distilled `records` (turn-0 responses that ended
    with EOS), spread evenly over `kinds`. `questions` (the prompts the records answered, matched
    by prompt id) enable the RAG and follow-up kinds; without them those kinds are skipped."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise DataError(f"unknown passage task kinds {bad}; choose from {list(KINDS)}")
    if num_prompts < 1:
        raise DataError(f"num_prompts must be >= 1, got {num_prompts}")
    qmap = {q.id: q.turns[0] for q in (questions or []) if q.turns}
    if not qmap:
        kinds = tuple(k for k in kinds if k not in ("rag", "follow-up"))
    passages = []
    for rec in records:
        if rec.get("turn", 0) != 0 or rec.get("finish_reason") != "eos":
            continue
        ids = [t for t in rec["response_ids"] if t != tokenizer.eos_token_id]
        text = tokenizer.decode(ids, skip_special_tokens=True).strip()
        if usable_passage(text, len(ids), min_tokens=min_tokens, max_tokens=max_tokens):
            passages.append((rec.get("prompt_id", rec.get("id", "")), text))
    if not passages:
        raise NoPassagesError("no usable passages: every response was cut short, too short, too long or repetitive "
                              "(a base model whose greedy answers never end, or loop, gives none)")
    rng = random.Random(seed)
    rng.shuffle(passages)
    out: list[Prompt] = []
    for i in range(min(num_prompts, len(passages) * len(kinds))):
        pid, p = passages[i % len(passages)]
        kind = kinds[i % len(kinds)]
        q = qmap.get(pid)
        if kind in ("rag", "follow-up") and q is None:
            kind = "summarize"
        if kind == "summarize":
            turns = [rng.choice(SUMMARIZE).format(p=p, n=rng.choice([1, 2, 3]), w=rng.choice([30, 50, 80]))]
        elif kind == "rag":
            turns = [rng.choice(RAG).format(p=p, q=q, q_lower=q[:1].lower() + q[1:])]
        elif kind == "translate":
            turns = [rng.choice(TRANSLATE).format(lang=rng.choice(LANGS), s=_first_sentences(p, rng))]
        elif kind == "rewrite":
            turns = [rng.choice(REWRITE).format(p=p)]
        elif kind == "extract":
            turns = [rng.choice(EXTRACT).format(p=p)]
        else:  # follow-up: the target answers the question again, then a request about its own answer
            turns = [q, rng.choice(FOLLOW_UPS)]
        out.append(Prompt(id=f"passage-{seed}-{i:06d}", turns=turns, category=f"passage-{kind}", group=pid))
    return out
