"""The model cache: its layout, the completion marker with a per-file manifest, integrity checks,
and the inter-process lock that lets one process build a model while others wait."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Iterator

COMPLETE_MARKER = ".mtp_complete"
META_FILE = "mtp_model.json"


def cache_dir() -> Path:
    """Root of the kit's cache: ``$MTP_CACHE_DIR`` or ``platformdirs.user_cache_dir("mtp")``."""
    env = os.environ.get("MTP_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mtp"))


def model_cache_path(name: str) -> Path:
    """Folder where built-in model ``name`` is (or will be) stored."""
    return cache_dir() / "models" / name


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file() and (folder / "config.json").is_file()


def cache_manifest(folder: Path) -> dict:
    """Size, mtime and sha256 of every file of a converted model folder (the completion marker's body)."""
    files = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER):
        st = f.stat()
        files[f.relative_to(folder).as_posix()] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                                   "sha256": _sha256_file(f)}
    return files


def verify_cache(folder: str | Path, *, deep: bool = False) -> list[str]:
    """Problems of a built-in model's cache folder ([] when intact).

    The completion marker lists every converted file with its size, mtime and sha256. Sizes are
    always compared (cheap); a file's sha256 is compared when its mtime changed or ``deep=True``.
    A marker of an older kit (no file list) allows only a check of the safetensors headers against
    the file sizes and of the tokenizer files' presence."""
    from mtp.io import safetensors_problem

    folder = Path(folder)
    if not is_complete(folder):
        return [f"{folder} is not a complete model cache (no {COMPLETE_MARKER} or config.json)"]
    text = (folder / COMPLETE_MARKER).read_text()
    try:
        files = json.loads(text)["files"]
    except (ValueError, KeyError, TypeError):
        if not re.fullmatch(r"[0-9a-f]{64}\s*", text):
            return [f"{folder / COMPLETE_MARKER} is malformed"]
        legacy = [p for p in map(safetensors_problem, sorted(folder.glob("*.safetensors"))) if p]
        if not any((folder / t).is_file() for t in ("tokenizer.json", "tokenizer.model")):
            legacy.append("no tokenizer.json / tokenizer.model")
        return legacy
    problems, touched = [], False
    for rel, want in files.items():
        f = folder / rel
        try:
            st = f.stat()
        except OSError:
            problems.append(f"{rel} is missing")
            continue
        if st.st_size != want["size"]:
            problems.append(f"{rel} has {st.st_size} bytes, {want['size']} expected")
        elif deep or st.st_mtime_ns != want.get("mtime_ns"):
            if _sha256_file(f) != want["sha256"]:
                problems.append(f"{rel} does not match its sha256 (changed after the build)")
            elif st.st_mtime_ns != want.get("mtime_ns"):  # same bytes (touched, copied): hash it once only
                want["mtime_ns"], touched = st.st_mtime_ns, True
    if touched and not problems:
        with contextlib.suppress(OSError):  # a read-only cache is checked again next time
            tmp = folder / (COMPLETE_MARKER + ".tmp")
            tmp.write_text(json.dumps({**json.loads(text), "files": files}, indent=1) + "\n")
            os.replace(tmp, folder / COMPLETE_MARKER)
    return problems


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock (fcntl); a no-op where fcntl does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: rely on the atomic rename alone
        yield
        return
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[mtp] waiting for another process to finish building {path.stem.lstrip('.')} "
                  f"(lock {path})", file=sys.stderr, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
