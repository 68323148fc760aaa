"""EAGLE-3 (Li et al. 2025): fused low/mid/high target features, direct token prediction,
training-time test, optional reduced draft vocabulary.

g_0 = fuse([h_low; h_mid; h_high]) (target layers `hidden_layers`, default the HF
output_hidden_states indices (2, L//2, L-1) of an L-layer target, deduplicated); each step:
g' = Layer(fc([RMSNorm(Emb(x)); RMSNorm(g)])), where g is g_0 at committed positions and the
draft's own previous output afterwards; logits = own LM head(own norm(g')) over the draft
vocabulary. Training unrolls num_heads steps on its own outputs (see `FeatureARHead`) with
suggested step weights `step_decay`**j (0.8).

Reduced vocabulary: `draft_vocab_size` Vd (`SharedUnembedding` with rows=False: buffers d2t [Vd],
the absolute target ids, not EAGLE's offset, and t2d [V] bool, from `token_counts` given to
build_head). The head's own LM head has Vd rows, initialised from the target's. Its logits are over
the draft vocabulary, in training (`HeadTrainOutput.vocab` is d2t; the losses map labels through
it, labels outside it count as misses, with no CE) and in drafting (the drafter maps drafted
indices to target ids through `draft_vocab`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mtp.heads.base import HeadConfig
from mtp.heads.eagle import FeatureARHead
from mtp.heads.layers import copied_norm, fresh_norm


@dataclass
class Eagle3Config(HeadConfig):
    family: str = "eagle3"
    hidden_layers: tuple[int, ...] = ()  # () -> (2, L//2, L-1) resolved against the target
    step_decay: float = 0.8  # suggested loss weight of unrolled step j: step_decay**j


class Eagle3Head(FeatureARHead):
    family = "eagle3"
    config_class = Eagle3Config

    @classmethod
    def resolve_hidden_layers(cls, config, num_layers):
        if not config.hidden_layers:
            config.hidden_layers = tuple(sorted({min(2, num_layers), max(1, num_layers // 2), max(1, num_layers - 1)}))
        return super().resolve_hidden_layers(config, num_layers)

    def __init__(self, config: Eagle3Config, target: nn.Module, token_counts=None) -> None:
        super().__init__(config, target)
        H = config.hidden_size
        n = len(config.hidden_layers)
        if n == 0:
            raise ValueError("eagle3: hidden_layers is empty (build it with build_head to resolve the default)")
        self.fuse = nn.Linear(n * H, H, bias=False)
        self.enorm = fresh_norm(self.target)
        self.gnorm = fresh_norm(self.target)
        self.fc = nn.Linear(2 * H, H, bias=False)
        self.norm = copied_norm(self.target)
        self.init_draft_vocabulary(token_counts, rows=False)
        w = self.draft_rows(self.target.lm_head.weight.detach())
        self.lm_head = nn.Linear(H, w.shape[0], bias=False)
        with torch.no_grad():
            self.lm_head.weight.copy_(w)

    def init_feature(self, hidden_states):
        dtype = self.fuse.weight.dtype
        return self.fuse(torch.cat([hidden_states[i].to(dtype) for i in self.config.hidden_layers], dim=-1))

    def step_input(self, g, ids):
        return self.fc(torch.cat([self.enorm(self.target.embed(ids).to(g.dtype)), self.gnorm(g)], dim=-1))

    def readout(self, g):
        return self.lm_head(self.norm(g))  # over the draft vocabulary when there is one (draft_vocab)

    def loss_weights(self) -> list[float]:
        return [self.config.step_decay ** j for j in range(self.config.num_heads)]
