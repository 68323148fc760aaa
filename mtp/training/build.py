"""What a training run is built from: the module that wraps head and target (the unit accelerate
prepares), the head a recipe asks for (or a checkpoint it starts from), and the LR schedule."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from mtp.data.cache import normalize_layer
from mtp.training.config import ConfigError, TrainConfig


class TrainModule(nn.Module):
    """What DDP / FSDP wrap: the head, plus the target when it is trained jointly.

    A frozen target is held outside the module's parameters (not saved, not synced)."""

    def __init__(self, head: nn.Module, target: nn.Module, joint: bool, feature_noise: float = 0.0) -> None:
        super().__init__()
        self.head = head
        self.joint = joint
        self.feature_noise = feature_noise  # data.feature_noise: applied in training mode only
        if joint:
            self.target = target
        else:
            object.__setattr__(self, "frozen_target", target)

    def run_target(self, input_ids, attention_mask):
        tgt = self.target if self.joint else self.frozen_target
        with torch.set_grad_enabled(self.joint and torch.is_grad_enabled()):
            return tgt(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)

    def forward(self, input_ids, attention_mask, hidden_states=None):
        """-> (draft logits list [B, T, V or Vd] x K, aux losses dict, metrics dict, target logits or None,
        d2t of a reduced draft vocabulary or None)."""
        target_logits = None
        if hidden_states is None:
            out = self.run_target(input_ids, attention_mask)
            hidden_states = {l: out.hidden_states[l] for l in self.head.config.hidden_layers}
            target_logits = out.logits
        if self.training and self.feature_noise > 0:
            hidden_states = {l: noised(h, self.feature_noise) for l, h in hidden_states.items()}
        res = self.head.forward_train(hidden_states, input_ids, attention_mask)
        return list(res.logits), dict(res.aux_losses), dict(res.metrics), target_logits, res.vocab


def noised(h: torch.Tensor, sigma: float) -> torch.Tensor:
    """h + sigma * rms(h) * N(0, 1): noise scaled per position to the hidden state's own size."""
    x = h.float()
    return (x + sigma * x.pow(2).mean(-1, keepdim=True).sqrt() * torch.randn_like(x)).to(h.dtype)


def check_head_fits(head, target) -> None:
    """ConfigError naming the mismatch when a head's sizes or layers do not fit the target."""
    c, tc = head.config, target.config
    if c.hidden_size and c.hidden_size != tc.hidden_size:
        raise ConfigError(f"head hidden_size {c.hidden_size} != target hidden_size {tc.hidden_size}")
    if c.vocab_size and c.vocab_size != tc.vocab_size:
        raise ConfigError(f"head vocab_size {c.vocab_size} != target vocab_size {tc.vocab_size}")
    for layer in c.hidden_layers:
        try:
            normalize_layer(layer, int(tc.num_hidden_layers))
        except ValueError as e:
            raise ConfigError(f"head.args.hidden_layers: {e}") from None


def build_head_for(cfg: TrainConfig, target, token_counts: torch.Tensor | None = None) -> nn.Module:
    """mtp.heads.build_head(family, target, **head.args); families that take `token_counts`
    (eagle3's reduced draft vocabulary) get the training data's response-token counts."""
    from mtp.heads import HEAD_FAMILIES, build_head

    if cfg.head.init:
        from mtp.heads.checkpoint import load_head, read_config

        saved = read_config(cfg.head.init).get("family")
        if saved != cfg.head.family:
            raise ConfigError(f"head.init={cfg.head.init!r} holds a {saved!r} head; this recipe trains {cfg.head.family!r}")
        return load_head(cfg.head.init, target, HEAD_FAMILIES)  # its own config (and draft vocabulary) are kept
    args = dict(cfg.head.args)
    cls = HEAD_FAMILIES.get(cfg.head.family)
    if cls is not None and "token_counts" in getattr(cls, "build_kwargs", ()) and token_counts is not None:
        args.setdefault("token_counts", token_counts)
    try:
        head = build_head(cfg.head.family, target, **args)
    except (ValueError, TypeError, KeyError, AssertionError) as e:
        raise ConfigError(f"head {cfg.head.family!r} with args {cfg.head.args} does not fit target "
                          f"{cfg.model.name!r}: {e}") from e
    return head


def lr_lambda(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        prog = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * prog))
    return f
