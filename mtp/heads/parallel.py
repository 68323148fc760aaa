"""Meta multi-token prediction (Gloeckle et al. 2024): K parallel transformer-layer heads.

Each head is one decoder layer of the target's own class over the trunk's hidden states
(config.hidden_layers: the last, post-norm one by default, or an earlier layer such as L-1, the
input of the target's last layer), then its own copy of the target's final norm, then the
frozen shared unembedding (its rows for the most frequent tokens with `draft_vocab_size`:
`SharedUnembedding`). Head j at position t drafts token t+2+j.
Drafting: every head keeps its own KV cache (mtp.kv.KVState) over the committed positions' trunk
states, fed through observe(); the K drafts come from the last committed position, independently
(sampled independently at T>0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mtp.heads.base import HeadConfig, HeadTrainOutput, MTPHead
from mtp.heads.drafting import depth_expander, last_rows
from mtp.heads.layers import (FeatureKV, SharedUnembedding, causal_allowed, copied_norm, make_decoder_layers,
                              positions_from_mask, run_layer)


@dataclass
class ParallelConfig(HeadConfig):
    family: str = "parallel"


class ParallelHead(SharedUnembedding, MTPHead):
    family = "parallel"
    config_class = ParallelConfig

    def __init__(self, config: ParallelConfig, target: nn.Module, token_counts=None) -> None:
        super().__init__(config, target)
        self.init_draft_vocabulary(token_counts)
        self.layer_config, self.layers = make_decoder_layers(self.target, config.num_heads)
        self.norms = nn.ModuleList([copied_norm(self.target) for _ in range(config.num_heads)])

    def _run(self, x, allowed, position_ids, cache=None) -> list[torch.Tensor]:
        return [run_layer(layer, self.target, x, allowed, position_ids, cache) for layer in self.layers]

    def forward_train(self, hidden_states, input_ids, attention_mask=None) -> HeadTrainOutput:
        x = hidden_states[self.config.hidden_layers[-1]]
        if attention_mask is None:
            attention_mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
        outs = self._run(x, causal_allowed(attention_mask), positions_from_mask(attention_mask))
        return HeadTrainOutput(logits=[self.unembed(n(o)) for n, o in zip(self.norms, outs)], vocab=self.draft_vocab)

    # ---- drafting -------------------------------------------------------------------------
    def draft_state(self, batch_size, device):
        return {"kv": FeatureKV(self.layer_config, batch_size, device), "last": None}

    def draft_observe(self, state, hidden_states, counts, sequences):
        kv: FeatureKV = state["kv"]
        x = hidden_states[self.config.hidden_layers[-1]]
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < counts[:, None]
        outs = kv.step(x, mask, self._run)
        kv.truncate(kv.lengths)  # crop padding slots no row needs
        new = torch.stack([n(o) for n, o in zip(self.norms, outs)], 2)  # [B, n, K, H]
        last = last_rows(new.flatten(2), counts, None if state["last"] is None else state["last"].flatten(1))
        state["last"] = last.view(x.shape[0], len(self.layers), -1)

    def draft_chain(self, state, sequences, num_tokens, pick):
        for j in range(num_tokens):
            pick(self.unembed(state["last"][:, j]))

    tree_expander_rows = True  # tree_expander(..., row=r) expands one row of a batch

    def tree_expander(self, state, sequences=None, row: int = 0):
        """One unembedding per tree depth for batch row `row` (the logits after a path depend only on its length)."""
        return depth_expander(lambda d: self.unembed(state["last"][row:row + 1, d])[0])
