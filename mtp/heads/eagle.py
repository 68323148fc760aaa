"""EAGLE-1 (Li et al. 2024): autoregression on features, one decoder layer, frozen LM head.

Step: g_{i+1} = Layer(fc([g_i; Emb(x_{i+1})])) with g the target's last (post-norm) hidden state
at committed positions and the draft's own predicted feature afterwards; logits = frozen target
LM head(g) (its rows for the most frequent tokens with `draft_vocab_size`: `SharedUnembedding`). Training loss: smooth-L1 between predicted and true features, weight
`feature_loss_weight` (1.0), returned in aux_losses["feature"]; the token CE is the trainer's,
with weight 0.1 per the paper (`head.loss_weights()`).

`FeatureARHead` (shared with EAGLE-3) holds the unrolled training and the drafting:
  - forward_train unrolls num_heads steps ("training-time test"): step s feeds the features the
    draft itself produced at step s-1 and the TRUE token x_{i+1+s}; its attention sees the true
    entries at positions <= i plus its own earlier steps rooted at i (a diagonal mask over a
    growing cache), exactly what the draft's KV cache holds at decode. logits[j] comes from step j.
  - drafting: its own KV cache (mtp.kv.KVState) holds one entry per committed position (target
    features, fed through observe); each draft step appends one speculative entry, which is
    dropped (truncate) after the chain. Any chain length works (default num_heads).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from mtp.heads.base import HeadConfig, HeadTrainOutput, MTPHead
from mtp.heads.drafting import last_rows
from mtp.heads.layers import FeatureKV, SharedUnembedding, make_decoder_layers, positions_from_mask, run_layer, shift_ids


class FeatureARHead(SharedUnembedding, MTPHead):
    """Base of EAGLE-style heads: a one-layer draft decoder that runs on its own features. Each
    family calls `init_draft_vocabulary` (a reduced draft vocabulary is optional)."""

    def __init__(self, config: HeadConfig, target: nn.Module) -> None:
        super().__init__(config, target)
        self.layer_config, layers = make_decoder_layers(self.target, 1)
        self.layer = layers[0]

    @abc.abstractmethod
    def init_feature(self, hidden_states: dict[int, torch.Tensor]) -> torch.Tensor:
        """Target hidden states -> the draft's input feature g at committed positions [B, T, H]."""

    @abc.abstractmethod
    def step_input(self, g: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Feature g [B, n, H] and next token ids [B, n] -> decoder-layer input [B, n, H]."""

    @abc.abstractmethod
    def readout(self, g: torch.Tensor) -> torch.Tensor:
        """Draft feature [..., H] -> logits [..., V], or [..., Vd] over the head's draft vocabulary
        (`draft_vocab`), in training and drafting alike."""

    @property
    def max_draft_tokens(self) -> int | None:
        return None

    def _layer(self, x, allowed, pos, cache):
        return run_layer(self.layer, self.target, x, allowed, pos, cache)

    def unroll(self, hidden_states, input_ids, attention_mask=None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Training-time test: (logits per step [B, T, V], features per step [B, T, H])."""
        B, T = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones(B, T, dtype=torch.long, device=input_ids.device)
        dev = input_ids.device
        pos0 = positions_from_mask(attention_mask)
        causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()[None] & attention_mask.bool()[:, None, :]
        eye = torch.eye(T, dtype=torch.bool, device=dev)[None].expand(B, T, T)
        cache = DynamicCache(config=self.layer_config)
        g = self.init_feature(hidden_states)
        logits, feats = [], []
        for s in range(self.config.num_heads):
            x = self.step_input(g, shift_ids(input_ids, s + 1))
            allowed = torch.cat([causal] + [eye] * s, dim=2)  # [B, T, (s+1)T]
            if s == 0:
                allowed = allowed | eye
            g = self._layer(x, allowed, pos0 + s, cache)
            logits.append(self.readout(g))
            feats.append(g)
        return logits, feats

    def forward_train(self, hidden_states, input_ids, attention_mask=None) -> HeadTrainOutput:
        logits, _ = self.unroll(hidden_states, input_ids, attention_mask)
        return HeadTrainOutput(logits=logits, vocab=self.draft_vocab)

    # ---- drafting -------------------------------------------------------------------------
    def draft_state(self, batch_size, device):
        return {"kv": FeatureKV(self.layer_config, batch_size, device), "g": None}

    def draft_observe(self, state, hidden_states, counts, sequences):
        kv: FeatureKV = state["kv"]
        g0 = self.init_feature(hidden_states)  # [B, n, H]
        B, n = g0.shape[:2]
        ids = torch.zeros(B, n, dtype=torch.long, device=g0.device)
        for r, c in enumerate(counts.tolist()):
            if c:  # new positions i = n_h-c .. n_h-1, fed with tokens x_{i+1}
                ids[r, :c] = torch.as_tensor(sequences[r][len(sequences[r]) - c:], device=g0.device)
        mask = torch.arange(n, device=g0.device)[None, :] < counts[:, None]
        out = kv.step(self.step_input(g0, ids), mask, self._layer)
        kv.truncate(kv.lengths)
        state["g"] = last_rows(out, counts, state["g"])

    tree_expander_rows = True  # tree_expander(..., row=r) expands one row of a batch

    def tree_expander(self, state, sequences=None, row: int = 0):
        """next_logits(paths) -> [len(paths), V] draft logits after each token path of row `row`
        (the empty path: after the pending token), all paths of one call in ONE layer forward over
        the frontier (EAGLE-2's batched expansion; each path's prefix must have been expanded by an
        earlier call, as depth-by-depth tree builders do). In a batch, the row's tree is built on a
        copy of its draft cache (FeatureKV.row). Call the returned `close()` after the tree to drop
        the speculative slots."""
        kv: FeatureKV = state["kv"]
        if kv.mask.shape[0] > 1:
            kv = kv.row(row)
        true_len = kv.lengths.clone()
        kv.begin_tree()
        feats: dict[tuple, torch.Tensor] = {(): state["g"][row]}  # path -> draft feature after it
        slots: dict[tuple, int] = {}

        def next_logits(paths):
            paths = [tuple(p) for p in paths]
            new = [p for p in paths if p not in feats]
            if new:
                dev = feats[()].device
                g_par = torch.stack([feats[p[:-1]] for p in new])[None]  # [1, m, H]
                toks = torch.tensor([[p[-1] for p in new]], device=dev)
                anc = [[slots[p[:i]] for i in range(1, len(p))] for p in new]
                out, idx = kv.step_tree(self.step_input(g_par, toks), anc, [len(p) for p in new], self._layer)
                for j, p in enumerate(new):
                    feats[p] = out[0, j]
                    slots[p] = idx[j]
            return self.readout(torch.stack([feats[p] for p in paths]))

        def close():
            kv.truncate(true_len)

        next_logits.close = close
        return next_logits

    def draft_chain(self, state, sequences, num_tokens, pick):
        kv: FeatureKV = state["kv"]
        true_len = kv.lengths.clone()
        g = state["g"]
        for s in range(num_tokens):
            t = pick(self.readout(g))
            if s + 1 < num_tokens:
                g = kv.step(self.step_input(g[:, None], t[:, None]), None, self._layer)[:, 0]
        kv.truncate(true_len)


@dataclass
class EagleConfig(HeadConfig):
    family: str = "eagle"
    feature_loss_weight: float = 1.0  # smooth-L1 on features (aux_losses["feature"])
    token_loss_weight: float = 0.1  # suggested CE weight per step (loss_weights())


class EagleHead(FeatureARHead):
    family = "eagle"
    config_class = EagleConfig

    def __init__(self, config: EagleConfig, target: nn.Module, token_counts=None) -> None:
        super().__init__(config, target)
        self.init_draft_vocabulary(token_counts)
        H = config.hidden_size
        self.fc = nn.Linear(2 * H, H, bias=True)

    def init_feature(self, hidden_states):
        return hidden_states[self.config.hidden_layers[-1]].to(self.fc.weight.dtype)

    def step_input(self, g, ids):
        return self.fc(torch.cat([g, self.target.embed(ids).to(g.dtype)], dim=-1))

    def readout(self, g):
        return self.unembed(g)  # features are post-norm, as the LM head takes them

    def loss_weights(self) -> list[float]:
        return [self.config.token_loss_weight] * self.config.num_heads

    def forward_train(self, hidden_states, input_ids, attention_mask=None) -> HeadTrainOutput:
        logits, feats = self.unroll(hidden_states, input_ids, attention_mask)
        f = self.init_feature(hidden_states)
        B, T = input_ids.shape
        real = torch.ones(B, T, dtype=torch.bool, device=f.device) if attention_mask is None else attention_mask.bool()
        losses, metrics = [], {}
        for s, g in enumerate(feats):  # step s at i predicts the feature at i+1+s
            o = s + 1
            if o >= T:
                break
            valid = real[:, :-o] & real[:, o:]
            err = F.smooth_l1_loss(g[:, :-o].float(), f[:, o:].float(), reduction="none").mean(-1)
            losses.append((err * valid).sum() / valid.sum().clamp_min(1))
            metrics[f"feature_loss_{s}"] = float(losses[-1].detach())
        aux = {}
        if losses:
            aux["feature"] = self.config.feature_loss_weight * torch.stack(losses).mean()
        return HeadTrainOutput(logits=logits, aux_losses=aux, metrics=metrics, vocab=self.draft_vocab)
