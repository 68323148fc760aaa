"""MTP draft heads: one file per family, one registry, one checkpoint format.

    head = build_head("eagle", target, num_heads=4)      # config fields as overrides
    out = head.forward_train(hidden_states, input_ids, attention_mask)  # logits[j][:, t] ~ ids[:, t+2+j]
    head.save_pretrained("ckpt/heads")
    head = load_heads("ckpt/heads", target)               # strict; refuses another base model
    mtp.generate(target, prompt, drafter=head.as_drafter())
"""
from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from mtp.heads.base import HeadConfig, HeadTrainOutput, MTPHead, TargetParts
from mtp.heads.checkpoint import HeadCheckpointError, load_head
from mtp.heads.deepseek_mtp import DeepSeekMTPConfig, DeepSeekMTPHead
from mtp.heads.eagle import EagleConfig, EagleHead
from mtp.heads.eagle3 import Eagle3Config, Eagle3Head
from mtp.heads.hydra import HydraConfig, HydraHead
from mtp.heads.medusa import MedusaConfig, MedusaHead
from mtp.heads.parallel import ParallelConfig, ParallelHead

HEAD_FAMILIES: dict[str, type[MTPHead]] = {
    "medusa": MedusaHead,
    "parallel": ParallelHead,
    "hydra": HydraHead,
    "deepseek": DeepSeekMTPHead,
    "eagle": EagleHead,
    "eagle3": Eagle3Head,
}


def list_families() -> list[str]:
    return list(HEAD_FAMILIES)


def build_head(family: str, target: nn.Module, **config_overrides: Any) -> MTPHead:
    """A fresh head of `family` for `target`, on the target's device and dtype.

    config_overrides: fields of the family's config dataclass (e.g. num_heads=3); hidden_size,
    vocab_size, base_model and base_fingerprint are filled from the target. Families may take
    extra construction-only arguments (token_counts=[V], the response-token counts a
    reduced draft vocabulary, `draft_vocab_size`, is chosen from).
    """
    from mtp.models import model_fingerprint

    if family not in HEAD_FAMILIES:
        raise ValueError(f"unknown head family {family!r}; known: {list_families()}")
    cls = HEAD_FAMILIES[family]
    extra = {k: config_overrides.pop(k) for k in list(config_overrides) if k in cls.build_kwargs}
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = set(config_overrides) - fields
    if unknown:
        raise ValueError(f"unknown {cls.config_class.__name__} fields {sorted(unknown)}; known: {sorted(fields)}")
    cfg = target.config
    for name in ("hidden_size", "vocab_size"):
        given = config_overrides.get(name, 0)
        if given and given != getattr(cfg, name):
            raise ValueError(f"{family} head config {name}={given} does not fit the target ({getattr(cfg, name)})")
    if "hidden_layers" in config_overrides:
        config_overrides["hidden_layers"] = tuple(config_overrides["hidden_layers"])
    config = cls.config_class(**config_overrides)
    config.family = family
    config.hidden_size = int(cfg.hidden_size)
    config.vocab_size = int(cfg.vocab_size)
    config.base_model = str(getattr(cfg, "name_or_path", "") or "")
    config.base_fingerprint = model_fingerprint(target)
    if config.num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {config.num_heads}")
    config.hidden_layers = cls.resolve_hidden_layers(config, int(cfg.num_hidden_layers))
    head = cls(config, target, **extra)
    p = next(target.parameters())
    return head.to(device=p.device, dtype=p.dtype)


def load_heads(directory, model: nn.Module, *, strict: bool = True) -> MTPHead:
    """Load a checkpoint written by `head.save_pretrained` onto `model` (strict: the weights must
    match the config exactly and `model` must be the base model the heads were trained for).
    Draft with `load_heads(d, model).as_drafter()`. Raises HeadCheckpointError otherwise."""
    return load_head(directory, model, {**HEAD_FAMILIES, **_OLD_NAMES}, strict=strict)


# Checkpoints written before the DeepSeek family was renamed from "mtp" (the package's own name).
_OLD_NAMES = {"mtp": DeepSeekMTPHead}


__all__ = [
    "HEAD_FAMILIES", "HeadCheckpointError", "HeadConfig", "HeadTrainOutput", "MTPHead", "TargetParts",
    "build_head", "list_families", "load_heads", "MedusaConfig", "MedusaHead", "ParallelConfig",
    "ParallelHead", "HydraConfig", "HydraHead", "DeepSeekMTPConfig", "DeepSeekMTPHead", "EagleConfig",
    "EagleHead", "Eagle3Config", "Eagle3Head",
]
