"""Medusa (Cai et al. 2024): K parallel residual heads on the last hidden state, then an LM head.

Head j: x -> ResBlock^num_layers(x) -> LM head, drafting the (j+1)-th token after the pending
one from the target's last committed (post-norm) hidden state. The LM head is the target's,
frozen and shared (Medusa-1), or with `own_lm_head` one trainable copy per head; with
`draft_vocab_size`, its rows for the most frequent tokens only (`SharedUnembedding`).
Drafting: all K tokens come from one hidden state; at T>0 each is sampled independently from
its own shaped distribution (a parallel head cannot see earlier drafts).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mtp.heads.base import HeadConfig, HeadTrainOutput, MTPHead
from mtp.heads.drafting import depth_expander, last_rows
from mtp.heads.layers import ResBlock, SharedUnembedding


@dataclass
class MedusaConfig(HeadConfig):
    family: str = "medusa"
    num_layers: int = 1  # residual blocks per head
    own_lm_head: bool = False  # one trainable LM head per head, initialised from the target's


class MedusaHead(SharedUnembedding, MTPHead):
    family = "medusa"
    config_class = MedusaConfig

    def __init__(self, config: MedusaConfig, target: nn.Module, token_counts=None) -> None:
        super().__init__(config, target)
        self.init_draft_vocabulary(token_counts, rows=not config.own_lm_head)
        H, V = config.hidden_size, config.vocab_size
        self.blocks = nn.ModuleList([
            nn.Sequential(*[ResBlock(H) for _ in range(config.num_layers)]) for _ in range(config.num_heads)
        ])
        if config.own_lm_head:
            w = self.draft_rows(self.target.lm_head.weight.detach())
            self.lm_heads = nn.ModuleList([nn.Linear(H, w.shape[0], bias=False) for _ in range(config.num_heads)])
            with torch.no_grad():
                for lm in self.lm_heads:
                    lm.weight.copy_(w)
        else:
            self.lm_heads = None

    def head_logits(self, j: int, h: torch.Tensor) -> torch.Tensor:
        """Head j on hidden states [..., H] -> logits [..., V] ([..., Vd] with a draft vocabulary)."""
        x = self.blocks[j](h)
        return self.unembed(x) if self.lm_heads is None else self.lm_heads[j](x)

    def forward_train(self, hidden_states, input_ids, attention_mask=None) -> HeadTrainOutput:
        h = hidden_states[self.config.hidden_layers[-1]]
        return HeadTrainOutput(logits=[self.head_logits(j, h) for j in range(self.config.num_heads)],
                               vocab=self.draft_vocab)

    # ---- drafting -------------------------------------------------------------------------
    def draft_state(self, batch_size, device):
        return {"h": None}

    def draft_observe(self, state, hidden_states, counts, sequences):
        state["h"] = last_rows(hidden_states[self.config.hidden_layers[-1]], counts, state["h"])

    def draft_chain(self, state, sequences, num_tokens, pick):
        for j in range(num_tokens):
            pick(self.head_logits(j, state["h"]))

    tree_expander_rows = True  # tree_expander(..., row=r) expands one row of a batch

    def tree_expander(self, state, sequences=None, row: int = 0):
        """One head call per tree depth for batch row `row` (the logits after a path depend only on its length)."""
        return depth_expander(lambda d: self.head_logits(d, state["h"][row:row + 1])[0])
