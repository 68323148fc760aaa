"""Atomic file writes and JSON / JSONL helpers used by everything that reads or writes files
(results, prompts, runs).

A write goes to a temporary file in the same folder, is fsynced, then renamed over the target:
readers and a later resume never see half a file, and a killed writer leaves the old file intact.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


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


def read_jsonl(path: str | Path, *, missing_ok: bool = False, torn_tail_ok: bool = False) -> list[dict]:
    """Every record of a JSONL file (blank lines skipped); mtp.data.DataError naming the file and
    line of a malformed one. missing_ok: a missing file reads as []. torn_tail_ok: a last line
    without its newline (an append-only log whose writer was killed mid-line) is ignored."""
    from mtp.data.prompts import DataError  # lazily: mtp.data imports this module

    path = Path(path)
    if not path.is_file():
        if missing_ok and not path.exists():
            return []
        raise DataError(f"no such data file: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if torn_tail_ok and not line.endswith("\n"):
                break
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno}); fix or delete "
                                "the line") from None
    return rows


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
