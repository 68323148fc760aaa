"""Transformer blocks for heads, built from the target architecture's own decoder-layer class.

No forked modelling code: a head's block is `type(<decoder>.layers[0])(config, idx)` with a
copy of the target config (every draft layer full attention), driven with explicit 4-D additive
masks, `position_ids` and the target's rotary embedding. Draft-side KV caches reuse
`mtp.kv.KVState` (slot mask, positions, rollback through the cache's own crop).
"""
from __future__ import annotations

import copy
import functools
import inspect

import torch
from torch import nn

from mtp.heads.base import FINAL_NORM_NAMES, TargetParts
from mtp.kv import KVState, new_cache


def draft_layer_config(target: TargetParts, num_layers: int):
    """A copy of the target config for `num_layers` draft layers, all full attention (draft
    caches hold holes after rollback, which a sliding window would count as tokens)."""
    cfg = copy.deepcopy(target.config)
    cfg.num_hidden_layers = num_layers
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = ["full_attention"] * num_layers
    elif getattr(cfg, "sliding_window", None) is not None:  # Mistral-style: every layer slides
        cfg.sliding_window = None
    return cfg


def make_decoder_layers(target: TargetParts, num_layers: int) -> tuple[object, nn.ModuleList]:
    """`num_layers` fresh decoder layers of the target's class (layer i has layer_idx i)."""
    if target.layer_class is None or (target.rotary_emb is None and target.position_embed is None):
        raise ValueError(f"{type(target.model).__name__}: expected a decoder with .layers (or GPT-2's .h) and "
                         "positions as a rotary embedding .rotary_emb or learned .wpe under its LM head "
                         "(Llama/Gemma/Qwen/Mistral/Phi/GPT-NeoX/GPT-2-style); this head family builds its draft "
                         "blocks from them. Medusa and Hydra heads do not need them.")
    cfg = draft_layer_config(target, num_layers)
    layers = nn.ModuleList([target.layer_class(cfg, i) for i in range(num_layers)])
    return cfg, layers


def rope(target: TargetParts, x: torch.Tensor, position_ids: torch.Tensor):
    """(cos, sin) from the target's rotary embedding; Gemma3 takes a layer type (global rope)."""
    rot = target.rotary_emb
    if "layer_type" in inspect.signature(rot.forward).parameters:
        return rot(x, position_ids, "full_attention")
    return rot(x, position_ids)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool [B, q, kv] -> additive [B, 1, q, kv] (finite minimum, so fully masked rows stay finite)."""
    m = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return m.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def causal_allowed(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] 0/1 key mask -> bool [B, T, T]: causal and key is real (a query always sees itself)."""
    B, T = attention_mask.shape
    causal = torch.ones(T, T, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal[None] & attention_mask.bool()[:, None, :]
    return allowed | torch.eye(T, dtype=torch.bool, device=attention_mask.device)[None]


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] -> position ids counting real tokens (left or right padding)."""
    return (attention_mask.long().cumsum(1) - 1).clamp_min(0)


@functools.lru_cache(maxsize=None)
def cache_kwarg(layer_class: type) -> str:
    """The name a decoder layer's forward takes its KV cache by: `cache` (Llama-style in
    transformers 5), `past_key_values`, or `layer_past` (GPT-NeoX)."""
    params = inspect.signature(layer_class.forward).parameters
    return next((n for n in ("cache", "past_key_values", "layer_past") if n in params), "cache")


def run_layer(layer: nn.Module, target: TargetParts, x: torch.Tensor, allowed: torch.Tensor,
              position_ids: torch.Tensor, cache=None) -> torch.Tensor:
    """One decoder layer over x [B, q, H]; allowed: bool [B, q, kv] (kv = cached + q slots).
    Positions as the target takes them: its rotary embedding inside attention, or (GPT-2) its
    learned position embedding added to the layer's input."""
    kw = {cache_kwarg(type(layer)): cache}
    if target.rotary_emb is not None:
        kw["position_embeddings"] = rope(target, x, position_ids)
    else:
        x = x + target.position_embed(position_ids).to(x.dtype)
    return layer(x, attention_mask=additive_mask(allowed, x.dtype), position_ids=position_ids, **kw)


class _ConfigHolder:
    """What KVState needs from a 'model' to build its cache: a config."""

    def __init__(self, config) -> None:
        self.config = config


class FeatureKV(KVState):
    """A KVState for draft layers fed with features instead of token ids.

    `step(x, input_mask, fn)` appends x [B, m, H] to every row (input_mask marks real inputs) and
    calls fn(x, allowed [B, m, S], position_ids [B, m], cache); rollback with `truncate` as usual.
    """

    def __init__(self, layer_config, batch_size: int, device: torch.device) -> None:
        super().__init__(_ConfigHolder(layer_config), batch_size, device)

    def step(self, x: torch.Tensor, input_mask: torch.Tensor | None, fn):
        B, m = x.shape[:2]
        if input_mask is None:
            input_mask = torch.ones(B, m, dtype=torch.long, device=x.device)
        input_mask = input_mask.to(self.mask.dtype)
        position_ids = (self.lengths[:, None] + input_mask.cumsum(1) - 1).clamp_min(0)
        S0 = self.num_slots
        self.mask = torch.cat([self.mask, input_mask], dim=1)
        S = self.num_slots
        slot = torch.arange(S, device=x.device)
        causal = slot[None, :] <= (S0 + torch.arange(m, device=x.device))[:, None]  # [m, S]
        allowed = causal[None] & self.mask.bool()[:, None, :]
        allowed = allowed | (slot[None, None, :] == (S0 + torch.arange(m, device=x.device))[None, :, None])
        return fn(x, allowed, position_ids, self.cache)


    def step_tree(self, x: torch.Tensor, ancestors: list[list[int]], depths: list[int], fn, num_committed: int = 0):
        """Batch-1 tree step: append x [1, m, H] as m speculative slots; new slot i attends to the
        committed (real) slots, the existing slots listed in ancestors[i] and itself, at position
        committed length + depths[i] - 1. Returns fn's output and the new slots' indices; drop
        the speculative slots afterwards with `truncate(committed lengths)`.

        num_committed c > 0: x's first c inputs are committed positions appended in the same forward
        (causal, at the next c positions; allowed only before any speculative slot, so truncating
        to the committed length + c keeps them), and `ancestors` / `depths` describe the m - c
        speculative inputs after them, which also see those c."""
        B, m = x.shape[:2]
        c = num_committed
        if B != 1:
            raise ValueError("step_tree drafts one row at a time")
        if not 0 <= c <= m or len(ancestors) != m - c or len(depths) != m - c:
            raise ValueError(f"step_tree: {m} inputs, {c} committed, {len(ancestors)} ancestor lists, {len(depths)} depths")
        if c and bool(self._speculative.any()):
            raise ValueError("step_tree: committed inputs must come before the tree's speculative slots")
        committed = self.mask.clone()
        S0 = self.num_slots
        dev = x.device
        self.mask = torch.cat([self.mask, torch.ones(1, m, dtype=self.mask.dtype, device=dev)], dim=1)
        allowed = torch.zeros(1, m, S0 + m, dtype=torch.bool, device=dev)
        allowed[0, :, :S0] = committed.bool()[0, None, :] & ~self._speculative[None, :S0]
        allowed[0, :c, S0: S0 + c] = torch.ones(c, c, dtype=torch.bool, device=dev).tril()
        allowed[0, c:, S0: S0 + c] = True
        for i, anc in enumerate(ancestors):
            if anc:
                allowed[0, c + i, anc] = True
            allowed[0, c + i, S0 + c + i] = True
        base = int(self.committed_length)
        position_ids = torch.tensor([[base + i for i in range(c)] + [base + c + d - 1 for d in depths]], device=dev)
        self._speculative = torch.cat([self._speculative, torch.zeros(c, dtype=torch.bool, device=dev),
                                       torch.ones(m - c, dtype=torch.bool, device=dev)])
        self.committed_length = base + c
        return fn(x, allowed, position_ids, self.cache), list(range(S0 + c, S0 + m))

    def row(self, r: int) -> "FeatureKV":
        """Row r alone: a batch-1 FeatureKV over a copy of row r's slots, for building that row's
        tree with step_tree while the batch's own cache stays as it is (drop the copy after)."""
        view = FeatureKV.__new__(FeatureKV)
        view.__dict__.update(self.__dict__)
        view.cache = new_cache(self.model)
        for i, layer in enumerate(self.cache.layers):
            keys = getattr(layer, "keys", None)
            if getattr(layer, "is_initialized", True) and keys is not None and keys.dim() == 4:
                view.cache.update(keys[r: r + 1], layer.values[r: r + 1], i)
        view.mask = self.mask[r: r + 1].clone()
        view.slot_pos = self.slot_pos[r: r + 1].clone()
        return view

    def begin_tree(self) -> None:
        """Mark every current slot as committed before step_tree calls (batch 1)."""
        self._speculative = torch.zeros(self.num_slots, dtype=torch.bool, device=self.mask.device)
        self.committed_length = int(self.mask[0].sum())


def shift_ids(input_ids: torch.Tensor, offset: int, pad: int = 0) -> torch.Tensor:
    """[B, T] -> [B, T] with out[:, t] = input_ids[:, t + offset] (pad past the end)."""
    out = torch.full_like(input_ids, pad)
    if offset < input_ids.shape[1]:
        out[:, : input_ids.shape[1] - offset] = input_ids[:, offset:]
    return out


def fresh_norm(target: TargetParts) -> nn.Module:
    """A new norm of the target's final norm class and epsilon (RMSNorm, or Phi's LayerNorm), at its
    initial (identity) scale."""
    norm = _final_norm(target)
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", getattr(target.config, "rms_norm_eps", 1e-6)))
    return type(norm)(target.config.hidden_size, eps=eps)


def copied_norm(target: TargetParts) -> nn.Module:
    """A trainable copy of the target's final norm (the head's own parameters)."""
    norm = copy.deepcopy(_final_norm(target))
    for p in norm.parameters():
        p.requires_grad_(True)
    return norm


def _final_norm(target: TargetParts) -> nn.Module:
    if target.norm is None:
        raise ValueError(f"{type(target.model).__name__}: found no final norm (looked for .<{'|'.join(FINAL_NORM_NAMES)}> under its LM head); "
                         "this head family copies it. Medusa and Hydra heads do not need it.")
    return target.norm


def draft_vocabulary(family: str, vocab_size: int, size: int, token_counts=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A reduced draft vocabulary (EAGLE-3, FR-Spec): d2t [size], the sorted target ids of the
    `size` most frequent tokens in token_counts [V] (a placeholder arange without counts; loading
    a checkpoint overwrites it), and t2d [V] bool (target id is in the draft vocabulary)."""
    if not 0 < size <= vocab_size:
        raise ValueError(f"{family}: draft_vocab_size must be in 1..{vocab_size}, got {size}")
    if token_counts is not None:
        counts = torch.as_tensor(token_counts, dtype=torch.float64).flatten()
        if counts.numel() != vocab_size:
            raise ValueError(f"{family}: token_counts has {counts.numel()} entries, the vocabulary {vocab_size}")
        d2t = torch.topk(counts, size, sorted=True).indices.sort().values
    else:
        d2t = torch.arange(size)
    t2d = torch.zeros(vocab_size, dtype=torch.bool)
    t2d[d2t] = True
    return d2t.long(), t2d


def expand_draft_logits(logits: torch.Tensor, d2t: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Logits over a draft vocabulary [..., Vd] -> over the target's [..., V], with the minimum
    float outside it, so draws and q never leave the draft vocabulary."""
    full = logits.new_full((*logits.shape[:-1], vocab_size), torch.finfo(logits.dtype).min)
    return full.index_copy(-1, d2t, logits)


class SharedUnembedding:
    """Mixin for heads whose logits come from the target's frozen, shared LM head, with an optional
    reduced draft vocabulary (FR-Spec, Zhao et al. 2025): `config.draft_vocab_size` Vd restricts
    the LM head to its rows for the Vd most frequent target tokens (`token_counts` [V] given to
    build_head). Buffers d2t [Vd] (draft index -> target id), t2d [V] bool and lm_rows [Vd, H] are
    saved with the head, so a loaded head drafts from the same rows. Its logits, in training and in
    drafting, are over the draft vocabulary (`draft_vocab` is d2t): the losses map labels through
    it, and the drafter (mtp.heads.drafting) maps drafted indices to target ids, so nothing the
    size of the target's vocabulary is built per draft (on gemma3-270m, with 262k tokens, that cost
    more than the head's own layers). Verification stays the target's, over the full vocabulary."""

    build_kwargs = ("token_counts",)

    def init_draft_vocabulary(self, token_counts=None, rows: bool = True) -> None:
        """Call from __init__ after MTPHead.__init__. rows=False: the head has its own LM head(s)
        over the draft vocabulary (initialise them from `draft_rows(weight)`) and needs no lm_rows."""
        size = self.config.draft_vocab_size
        if size is None:
            self.d2t = self.t2d = self.lm_rows = None
            return
        lm = self.target.lm_head
        if rows and getattr(lm, "bias", None) is not None:
            raise ValueError(f"{self.family}: draft_vocab_size needs an LM head without bias")
        d2t, t2d = draft_vocabulary(self.family, self.config.vocab_size, size, token_counts)
        self.register_buffer("d2t", d2t)
        self.register_buffer("t2d", t2d)
        if rows:
            self.register_buffer("lm_rows", self.draft_rows(lm.weight.detach()).clone())
        else:
            self.lm_rows = None

    def draft_rows(self, weight: torch.Tensor) -> torch.Tensor:
        """The rows [Vd, H] of an LM-head weight [V, H] for the draft vocabulary (all rows without one)."""
        return weight if self.d2t is None else weight[self.d2t.to(weight.device)]

    def unembed(self, h: torch.Tensor) -> torch.Tensor:
        """The shared LM head on a post-norm hidden state [..., H]: logits [..., Vd] over its draft
        rows when there are, else [..., V]."""
        return self.target.logits(h, rows=self.lm_rows)

    @property
    def draft_vocab(self) -> torch.Tensor | None:
        """d2t [Vd] when the head's logits are over a reduced draft vocabulary, else None."""
        return self.d2t


class ResBlock(nn.Module):
    """Medusa's residual block x + SiLU(W x + b), W zero-initialised (identity at init)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.linear.weight)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.linear(x))
