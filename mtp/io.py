"""File helpers shared by everything that reads or writes (results, prompts, data, runs).

A write goes to a temporary file in the same folder, is fsynced, then renamed over the target:
readers and a later resume never see half a file, and a killed writer leaves the old file intact.
JSONL is read by one function, `read_jsonl`, strict by default (see its docstring).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


class DataError(ValueError):
    """Bad input data; the message names the file (and line) and what is wrong."""


def read_jsonl(path: str | Path, *, tolerant_tail: bool = False, hint: str = "") -> list:
    """The records of a JSONL file, one JSON value per non-blank line.

    Strict (the default): a missing file or any malformed line raises `DataError` naming
    `file:line`. `tolerant_tail=True` is for append-only files that a killed writer may leave
    with a torn last line (e.g. a benchmark's resumable samples.jsonl): a missing file reads as
    empty, and a last line without its newline is ignored (the writer always ends a record with
    one, so such a line is incomplete); a malformed complete line still raises. `hint` is added
    to the error message (what the user should do about the bad line).
    """
    path = Path(path)
    if not path.is_file():
        if tolerant_tail and not path.exists():
            return []
        raise DataError(f"no such data file: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if tolerant_tail and not line.endswith("\n"):
                break  # torn write: the record was never finished
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno})"
                                + (f"; {hint}" if hint else "")) from None
    return rows


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def jsonable(x):
    """NaN / inf -> None (standard JSON), recursively through dicts, lists and tuples."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(jsonable(obj), indent=2) + "\n")


def safetensors_problem(path: str | Path) -> str | None:
    """Why a .safetensors file is unreadable (None when its size matches its header): a cheap check
    for truncated or padded files that reads only the header."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n)) if 0 < n < 1 << 28 else None
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        size = path.stat().st_size
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        return f"{path.name} unreadable ({type(e).__name__})"
    if size != 8 + n + end:
        return f"{path.name} has {size} bytes, its header says {8 + n + end} (truncated)"
    return None
