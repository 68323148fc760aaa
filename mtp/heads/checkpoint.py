"""Head checkpoints: `model.safetensors` (the head's own tensors, shared ones once) + `config.json`.

config.json: {"format": "mtp-heads", "family", "config" (the head config), "base_model",
"base_fingerprint", "hidden_size", "vocab_size", "mtp_version"}. Writes are atomic: a temp folder
in the same parent, then os.replace. Loading is strict and refuses heads trained for another base.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

FORMAT = "mtp-heads"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class HeadCheckpointError(ValueError):
    """A heads checkpoint is missing, malformed, or belongs to another base model."""


def _is_heads_dir(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def save_head(head, directory) -> Path:
    from safetensors.torch import save_model

    import mtp

    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or (any(directory.iterdir()) and not _is_heads_dir(directory))):
        raise HeadCheckpointError(f"{directory} exists and is not a heads checkpoint; refusing to overwrite it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    cfg = head.config
    meta = {
        "format": FORMAT, "family": head.family, "config": cfg.to_dict(), "base_model": cfg.base_model,
        "base_fingerprint": cfg.base_fingerprint, "hidden_size": cfg.hidden_size, "vocab_size": cfg.vocab_size,
        "mtp_version": mtp.__version__,
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        save_model(head, str(tmp / WEIGHTS), metadata={"format": "pt"})  # shared tensors saved once
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            os.replace(directory, old / "x")
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_config(directory) -> dict:
    directory = Path(directory)
    path = directory / CONFIG
    if not path.is_file() or not (directory / WEIGHTS).is_file():
        raise HeadCheckpointError(f"{directory} is not a heads checkpoint (needs {CONFIG} and {WEIGHTS})")
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise HeadCheckpointError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise HeadCheckpointError(f"{path} is not a heads checkpoint config (no \"format\": \"{FORMAT}\")")
    for key in ("family", "config"):
        if key not in meta:
            raise HeadCheckpointError(f"{path}: missing field {key!r}")
    return meta


def load_head(directory, model: torch.nn.Module, families: dict, *, strict: bool = True):
    from safetensors.torch import load_model

    from mtp.models import model_fingerprint

    directory = Path(directory)
    meta = read_config(directory)
    family = meta["family"]
    if family not in families:
        raise HeadCheckpointError(f"{directory}: unknown head family {family!r}; known: {sorted(families)}")
    cls = families[family]
    try:
        config = cls.config_class.from_dict(meta["config"])
    except (TypeError, ValueError) as e:
        raise HeadCheckpointError(f"{directory}: bad head config: {e}") from None
    trained_for = f"{config.base_model or '?'} (fingerprint {config.base_fingerprint or '?'})"
    mcfg = model.config
    for field in ("hidden_size", "vocab_size"):
        want, have = getattr(config, field), getattr(mcfg, field, None)
        if want != have:
            raise HeadCheckpointError(
                f"{directory}: heads were trained for {trained_for} with {field} {want}; "
                f"this model ({getattr(mcfg, 'name_or_path', '?')}) has {field} {have}")
    if config.base_fingerprint:
        fp = model_fingerprint(model)
        if fp != config.base_fingerprint and strict:
            raise HeadCheckpointError(
                f"{directory}: heads were trained for {trained_for}; this model "
                f"({getattr(mcfg, 'name_or_path', '?')}) has fingerprint {fp}. Load the matching base "
                "model, or pass strict=False to use them anyway")
    head = cls(config, model)
    p = next(model.parameters())
    head.to(device=p.device, dtype=p.dtype if p.is_floating_point() else None)
    try:
        missing, unexpected = load_model(head, str(directory / WEIGHTS), strict=False, device=str(p.device))
    except Exception as e:  # safetensors.SafetensorError, a truncated file, bytes that are not a header
        raise HeadCheckpointError(f"{directory / WEIGHTS}: cannot read the weights ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''}); the file is truncated or corrupt, "
                                  "retrain or restore it") from None
    if missing or unexpected:
        raise HeadCheckpointError(f"{directory}: weights do not match the {family} config "
                                  f"(missing {sorted(missing)}, unexpected {sorted(unexpected)})")
    base = {id(t) for t in model.parameters()}  # shared with the target (e.g. its lm_head): not the heads' own
    bad = [n for n, t in list(head.named_parameters()) + list(head.named_buffers())
           if id(t) not in base and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise HeadCheckpointError(f"{directory / WEIGHTS}: non-finite (NaN / inf) values in {len(bad)} tensor(s), "
                                  f"e.g. {bad[0]}; the file is corrupt or training diverged")
    head.eval()
    return head
