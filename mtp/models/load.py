"""``load_model``: a built-in name, a local folder or .gguf file, or a hub id -> (model, tokenizer)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import torch

from mtp.models.cache import verify_cache
from mtp.models.device import resolve_device, resolve_dtype
from mtp.models.fetch import ensure_builtin, fix_special_tokens, load_gguf
from mtp.models.registry import BUILTIN_MODELS, BuiltinModel, ModelLoadError
from mtp.models.tiny import build_tiny


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
        folder = ensure_builtin(spec, deep=verify or attempt > 0)
        try:
            model, tok = _from_pretrained(str(folder), dtype, attn_implementation)
            err = None if _probe_finite(model, spec.name, warn=False) else "non-finite logits"
        except Exception as e:
            model, tok, err = None, None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if err is None:
            break
        if attempt == 0 and verify_cache(folder, deep=True):
            continue  # damaged: the next ensure_builtin rebuilds it
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
            model, tok = build_tiny(spec.name)
            if attn_implementation is not None:
                model.set_attn_implementation(attn_implementation)
        else:
            model, tok = _load_builtin(spec, dt, attn_implementation, verify)
    else:
        path = Path(name).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            model, tok = load_gguf(path.parent, path.name)
        elif path.is_dir():
            ggufs = sorted(path.glob("*.gguf"))
            if not (path / "config.json").is_file() and len(ggufs) == 1:
                model, tok = load_gguf(path, ggufs[0].name)
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
    fix_special_tokens(model, tok)
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
