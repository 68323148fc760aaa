"""Prompt sources: the kit's built-in set, local JSONL / text files, and HF `datasets` names.

Every source yields `Prompt(id, category, turns)`: `turns` are the user messages of a conversation
(one for a single-turn prompt). Chat templates are applied later, by the tokenizer's own template.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

BUILTIN = "builtin"
BUILTIN_PATH = Path(__file__).with_name("prompts.jsonl")


class DataError(ValueError):
    """Bad input data; the message names the file (and line) and what is wrong."""


@dataclass
class Prompt:
    id: str
    turns: list[str]
    category: str = ""
    meta: dict = field(default_factory=dict)


def _prompt_from_record(rec: object, where: str, fallback_id: str) -> Prompt:
    if isinstance(rec, str):
        rec = {"prompt": rec}
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if "turns" in rec:
        turns = rec["turns"]
    elif "messages" in rec:  # OpenAI-style (UltraChat): keep the user messages
        turns = [m.get("content", "") for m in rec["messages"] if isinstance(m, dict) and m.get("role") == "user"]
    elif "conversations" in rec:  # ShareGPT-style: {"from": "human"|"gpt", "value": ...}
        turns = [m.get("value", "") for m in rec["conversations"]
                 if isinstance(m, dict) and m.get("from") in ("human", "user")]
    else:
        text = next((rec[k] for k in ("prompt", "instruction", "question", "text", "input") if k in rec), None)
        if text is None:
            raise DataError(f"{where}: no prompt field; expected one of 'turns', 'messages', 'prompt', "
                            f"'instruction', 'question', 'text' (got keys {sorted(rec)})")
        turns = [text]
    if (not isinstance(turns, list) or not turns
            or not all(isinstance(t, str) and t.strip() for t in turns)):
        raise DataError(f"{where}: 'turns' must be a non-empty list of non-empty strings, got {turns!r:.200}")
    return Prompt(id=str(rec.get("id", fallback_id)), turns=list(turns), category=str(rec.get("category", "")))


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file; raises DataError naming the file and line of any bad line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such data file: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
    return rows


def load_prompts(source: str | Path = BUILTIN, *, split: str = "train", limit: int | None = None,
                 categories: list[str] | None = None) -> list[Prompt]:
    """Prompts from `source`:

    - "builtin": the kit's prompt set (mtp/data/prompts.jsonl);
    - a `.jsonl` file: records with "turns" / "messages" / "prompt" (+ optional "id", "category");
    - a `.txt` file: one prompt per non-empty line;
    - "hf:<name>[:<config>]": a Hugging Face `datasets` name (needs `datasets` and a reachable hub);
    - several of these joined by commas ("builtin,runs/data/prompts.jsonl"), concatenated.
    JSONL records may be {"turns": [...]}, {"prompt": ...}, OpenAI/UltraChat {"messages": [...]} or
    ShareGPT {"conversations": [{"from": "human", "value": ...}, ...]} (user turns are kept).
    Raises DataError on empty / malformed input or duplicate ids.
    """
    src = str(source)
    if "," in src and not Path(src).is_file():
        prompts = [p for part in src.split(",") if part.strip() for p in load_prompts(part.strip(), split=split)]
        return _finish(prompts, src, categories, limit)
    if src == BUILTIN:
        prompts = [_prompt_from_record(r, f"{BUILTIN_PATH}:{i + 1}", f"builtin-{i}")
                   for i, r in enumerate(read_jsonl(BUILTIN_PATH))]
    elif src.startswith("hf:"):
        prompts = _load_hf(src[3:], split)
    else:
        path = Path(src).expanduser()
        if not path.is_file():
            raise DataError(f"prompt source {src!r} is neither 'builtin', 'hf:<dataset>', nor an existing file")
        if path.suffix == ".jsonl" or path.suffix == ".json":
            prompts = [_prompt_from_record(r, f"{path}:{i + 1}", f"{path.stem}-{i}")
                       for i, r in enumerate(read_jsonl(path))]
        else:
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
            prompts = [Prompt(id=f"{path.stem}-{i}", turns=[ln]) for i, ln in enumerate(x for x in lines if x)]
        if not prompts:
            raise DataError(f"prompt file {path} is empty (no prompts)")
    return _finish(prompts, src, categories, limit)


def _finish(prompts: list[Prompt], src: str, categories, limit) -> list[Prompt]:
    if categories:
        prompts = [p for p in prompts if p.category in set(categories)]
    seen: set[str] = set()
    for p in prompts:
        if p.id in seen:
            raise DataError(f"duplicate prompt id {p.id!r} in {src}: ids must be unique (resuming relies on them)")
        seen.add(p.id)
    if not prompts:
        raise DataError(f"no prompts in {src}" + (f" for categories {categories}" if categories else ""))
    return prompts[:limit] if limit else prompts


def _load_hf(spec: str, split: str) -> list[Prompt]:
    try:
        import datasets  # lazy: an optional dependency
    except ImportError:
        raise DataError(f"loading HF dataset {spec!r} needs the `datasets` package: pip install datasets") from None
    name, _, config = spec.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:
        raise DataError(f"could not load HF dataset {name!r} (split {split!r}): {type(e).__name__}: {str(e)[:300]}. "
                        "No hub may be reachable from this machine; use 'builtin' or a local JSONL/text file.") from e
    return [_prompt_from_record(dict(r), f"{name}[{i}]", f"{name.replace('/', '_')}-{i}") for i, r in enumerate(ds)]
