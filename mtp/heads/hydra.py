"""Hydra (Ankner et al. 2024): sequentially dependent MLP heads.

Head j at position t sees the target hidden state h_t and the embeddings of tokens t+1 .. t+1+j
(the pending token and the drafts before its own): in_j = [h_t, e_{t+1}, .., e_{t+1+j}] ->
Linear((j+2)H -> H) (initialised to pass h_t through) -> ResBlock^num_layers -> frozen target
LM head (its rows for the most frequent tokens with `draft_vocab_size`: `SharedUnembedding`).
Embeddings are the target's (frozen, shared), RMS-normalised without a weight.
Training is teacher-forced with the true tokens; drafting feeds each head its own earlier drafts
(sampled ones at T>0), so q_j is conditional on the drafted prefix.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtp.heads.base import HeadConfig, HeadTrainOutput, MTPHead
from mtp.heads.drafting import last_rows
from mtp.heads.layers import ResBlock, SharedUnembedding, shift_ids


@dataclass
class HydraConfig(HeadConfig):
    family: str = "hydra"
    num_layers: int = 1  # residual blocks after each head's input projection


class HydraHead(SharedUnembedding, MTPHead):
    family = "hydra"
    config_class = HydraConfig

    def __init__(self, config: HydraConfig, target: nn.Module, token_counts=None) -> None:
        super().__init__(config, target)
        self.init_draft_vocabulary(token_counts)
        H = config.hidden_size
        self.in_proj = nn.ModuleList([nn.Linear((j + 2) * H, H) for j in range(config.num_heads)])
        with torch.no_grad():
            for lin in self.in_proj:  # start as Medusa: pass h_t through, ignore the embeddings
                lin.weight.zero_()
                lin.weight[:, :H].copy_(torch.eye(H))
                lin.bias.zero_()
        self.blocks = nn.ModuleList([
            nn.Sequential(*[ResBlock(H) for _ in range(config.num_layers)]) for _ in range(config.num_heads)
        ])

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.target.embed(ids).to(self.in_proj[0].weight.dtype)
        return F.rms_norm(e, (e.shape[-1],))

    def head_logits(self, j: int, h: torch.Tensor, embs: list[torch.Tensor]) -> torch.Tensor:
        """h [..., H], embs: j+1 embeddings [..., H] of tokens t+1..t+1+j -> logits [..., V]
        ([..., Vd] with a draft vocabulary)."""
        x = self.in_proj[j](torch.cat([h, *embs[: j + 1]], dim=-1))
        return self.unembed(self.blocks[j](x))

    def forward_train(self, hidden_states, input_ids, attention_mask=None) -> HeadTrainOutput:
        h = hidden_states[self.config.hidden_layers[-1]]
        embs = [self._embed(shift_ids(input_ids, o + 1)) for o in range(self.config.num_heads)]
        return HeadTrainOutput(logits=[self.head_logits(j, h, embs) for j in range(self.config.num_heads)],
                               vocab=self.draft_vocab)

    # ---- drafting -------------------------------------------------------------------------
    def draft_state(self, batch_size, device):
        return {"h": None}

    def draft_observe(self, state, hidden_states, counts, sequences):
        state["h"] = last_rows(hidden_states[self.config.hidden_layers[-1]], counts, state["h"])

    def draft_chain(self, state, sequences, num_tokens, pick):
        h = state["h"]
        pending = torch.tensor([s[-1] for s in sequences], device=h.device)
        embs = [self._embed(pending)]
        for j in range(num_tokens):
            t = pick(self.head_logits(j, h, embs))
            embs.append(self._embed(t))

    tree_expander_rows = True  # tree_expander(..., row=r) expands one row of a batch

    def tree_expander(self, state, sequences, row: int = 0):
        """next_logits(paths) -> [len(paths), V], the logits after each token path (after the
        pending token) for batch row `row`, one head call per path length over all paths of that length."""
        h = state["h"][row:row + 1]
        pending = self._embed(torch.tensor([sequences[row][-1]], device=h.device))

        def next_logits(paths):
            by_len: dict[int, list[int]] = {}
            for i, p in enumerate(paths):
                by_len.setdefault(len(p), []).append(i)
            zs, order = [], []
            for d, idx in by_len.items():
                m = len(idx)
                toks = torch.tensor([list(paths[i]) for i in idx], dtype=torch.long, device=h.device).view(m, d)
                embs = [pending.expand(m, -1)] + [self._embed(toks[:, i]) for i in range(d)]
                zs.append(self.head_logits(d, h.expand(m, -1), embs))
                order += idx
            return torch.cat(zs)[torch.argsort(torch.tensor(order, device=h.device))]  # back to the paths' order

        next_logits.close = lambda: None
        return next_logits
