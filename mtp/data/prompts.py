"""The kit's one prompt type and its sources: the built-in set, local JSONL / text files, HF
`datasets` names. Benchmark suites (`mtp.suites`) and self-distillation (`mtp.data.distill`) both
use `Prompt`; both turn it into token ids with `mtp.chat.encode_turn`.

`turns` are the user messages of a conversation (one for a single-turn prompt); the assistant's
replies between them are the model's own, generated turn by turn.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mtp.io import DataError, read_jsonl

BUILTIN = "builtin"
BUILTIN_PATH = Path(__file__).with_name("prompts.jsonl")
FORMATS = ("chat", "raw")

__all__ = ["BUILTIN", "BUILTIN_PATH", "DataError", "Prompt", "load_prompts", "prompts_from_jsonl"]


@dataclass
class Prompt:
    """One prompt (a conversation's user turns).

    format: "chat" (the tokenizer's chat template) or "raw" (the text as is, e.g. code completion).
    The benchmark fields: length is the length-mix name ("" when no mix is used),
    min_input_tokens pads the first turn with reference documents up to that many tokens, and
    max_new_tokens is a per-prompt output limit (None: the run's)."""

    id: str
    turns: list[str]
    category: str = ""
    format: str = "chat"
    length: str = ""
    min_input_tokens: int = 0
    max_new_tokens: int | None = None
    #: held-out split group ("" : the id). Passage tasks carry their source prompt's id, so a task and
    #: the answer it quotes land on the same side of the split (mtp.data.dataset.split_examples)
    group: str = ""


def _prompt_from_record(rec: object, where: str, fallback_id: str, default_category: str = "") -> Prompt:
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
    fmt = rec.get("format", "chat")
    if fmt not in FORMATS:
        raise DataError(f"{where}: 'format' must be one of {list(FORMATS)}, got {fmt!r}")
    return Prompt(id=str(rec.get("id", fallback_id)), turns=list(turns),
                  category=str(rec.get("category", default_category)), format=fmt, group=str(rec.get("group", "")))


def prompts_from_jsonl(path: str | Path, *, default_category: str = "",
                       fallback_id: Callable[[int], str] | None = None) -> list[Prompt]:
    """The prompts of a JSONL file (record formats: see `load_prompts`). A record without an
    "id" gets fallback_id(i) for its 0-based index i (default "<file stem>-<i>")."""
    path = Path(path)
    fallback_id = fallback_id or (lambda i: f"{path.stem}-{i}")
    return [_prompt_from_record(r, f"{path}:{i + 1}", fallback_id(i), default_category)
            for i, r in enumerate(read_jsonl(path))]


def load_prompts(source: str | Path = BUILTIN, *, split: str = "train", limit: int | None = None,
                 categories: list[str] | None = None) -> list[Prompt]:
    """Prompts from `source`:

    - "builtin": the kit's prompt set (mtp/data/prompts.jsonl);
    - a `.jsonl` file: records with "turns" / "messages" / "prompt" (+ optional "id", "category",
      "format": "chat" or "raw");
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
        prompts = prompts_from_jsonl(BUILTIN_PATH, fallback_id=lambda i: f"builtin-{i}")
    elif src.startswith("hf:"):
        prompts = _load_hf(src[3:], split)
    else:
        path = Path(src).expanduser()
        if not path.is_file():
            raise DataError(f"prompt source {src!r} is neither 'builtin', 'hf:<dataset>', nor an existing file")
        if path.suffix == ".jsonl" or path.suffix == ".json":
            prompts = prompts_from_jsonl(path)
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
