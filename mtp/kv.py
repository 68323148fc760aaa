"""KV-cache bookkeeping for a batch of rows whose lengths differ: one place that crops and masks.

Rows share one transformers cache. Every forward appends the same number of slots to every row;
rolling a row back masks its rejected slots out of the 2-D attention mask ("holes"), and slots no
row needs at the end are cropped through the cache's own `crop`. With one row there are never holes.
Positions are explicit (`position_ids` = number of real tokens before the slot), so holes are
invisible to the model.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache


def new_cache(model: torch.nn.Module) -> DynamicCache:
    """A DynamicCache for `model` that can be rolled back, sliding-window layers included."""
    cache = DynamicCache(config=model.config)
    # Sliding-window layers drop old states unless told to keep them until the next crop.
    cache.activate_past_recording()
    return cache


def crop_cache(cache: DynamicCache, num_remove: int) -> None:
    """Remove the last `num_remove` (>= 0) slots of every layer.

    transformers 5.x `crop` takes a NEGATIVE count of tokens to remove (4.x took the new length);
    this helper is the only caller. crop(0) is still called: it trims sliding-window layers that
    record their past back to the window.
    """
    if num_remove < 0:
        raise ValueError(f"num_remove must be >= 0, got {num_remove}")
    # Cache.crop, minus layers that hold nothing yet (5.24's sliding layer fails on those).
    for layer in cache.layers:
        if getattr(layer, "is_initialized", True):
            layer.crop(-num_remove)


def sliding_window_of(model: torch.nn.Module) -> int | None:
    """The sliding window when some layers use one (Gemma3, Mistral-style), else None."""
    cfg = model.config
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if not window or (types is not None and "sliding_attention" not in types):
        return None
    return int(window)


class KVState:
    """A cache plus the per-row slot mask [B, S] and slot positions of a batch of sequences."""

    def __init__(self, model: torch.nn.Module, batch_size: int, device: torch.device) -> None:
        self.model = model
        self.cache = new_cache(model)
        self.mask = torch.zeros(batch_size, 0, dtype=torch.long, device=device)
        self.slot_pos = torch.zeros(batch_size, 0, dtype=torch.long, device=device)
        self.window = sliding_window_of(model)
        self.mixed_window = getattr(model.config, "layer_types", None) is not None
        self._last_m = 0

    @property
    def num_slots(self) -> int:
        return self.mask.shape[1]

    @property
    def lengths(self) -> torch.Tensor:
        """[B] real tokens held per row (the position id of the next token)."""
        return self.mask.sum(1)

    def forward(
        self,
        input_ids: torch.Tensor,
        input_mask: torch.Tensor | None = None,
        *,
        output_hidden_states: bool = False,
        logits_to_keep: int = 0,
    ):
        """Run the model on input_ids [B, m] appended to every row; input_mask [B, m] marks real
        inputs (padding gets no position and is never attended to). All real inputs are kept
        until `truncate` is called."""
        B, m = input_ids.shape
        if input_mask is None:
            input_mask = torch.ones(B, m, dtype=torch.long, device=input_ids.device)
        input_mask = input_mask.to(self.mask.dtype)
        position_ids = self.lengths[:, None] + input_mask.cumsum(1) - 1
        position_ids = position_ids.clamp_min(0)
        self.mask = torch.cat([self.mask, input_mask], dim=1)
        self.slot_pos = torch.cat([self.slot_pos, position_ids], dim=1)
        self._last_m = m
        return self.model(
            input_ids=input_ids,
            attention_mask=self.mask,
            position_ids=position_ids,
            cache=self.cache,
            use_cache=True,
            output_hidden_states=output_hidden_states,
            logits_to_keep=logits_to_keep,
        )

    def truncate(self, lengths: torch.Tensor) -> None:
        """Keep, per row, only the first lengths[r] real tokens; crop slots that no row needs."""
        keep = self.mask.cumsum(1) <= lengths.to(self.mask.device)[:, None]
        self.mask = self.mask * keep.to(self.mask.dtype)
        used = self.mask.any(0).nonzero()
        new_slots = int(used[-1].item()) + 1 if used.numel() else 0
        crop_cache(self.cache, self.num_slots - new_slots)
        self.mask = self.mask[:, :new_slots]
        self.slot_pos = self.slot_pos[:, :new_slots]

    # -- trees ------------------------------------------------------------------------------------
    def forward_tree(
        self,
        input_ids: torch.Tensor,
        parents: torch.Tensor,
        num_nodes: torch.Tensor,
        *,
        depths: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ):
        """Run the model on [pending, node_0..node_{N-1}] (input_ids [B, N+1]) where each node
        attends to the committed context, the pending token and its own ancestors (parents [B, N],
        see mtp.tree). A 4-D additive mask and explicit positions (depth in the tree) go through
        the stock transformers model. depths: [B, N] `node_depths(parents)` when the caller has
        them already. Call `keep` afterwards."""
        from mtp.tree import ancestor_matrix, node_depths

        B, m = input_ids.shape
        dev = self.mask.device
        dtype = next(self.model.parameters()).dtype
        anc = ancestor_matrix(parents.to(dev), num_nodes.to(dev))  # [B, m, m]
        allowed = torch.cat([self.mask.bool()[:, None, :].expand(B, m, self.num_slots), anc], dim=2)
        if depths is None:
            depths = node_depths(parents.to(dev))
        depth = torch.cat([torch.zeros(B, 1, dtype=torch.long, device=dev), depths.to(dev)], 1)
        positions = self.lengths[:, None] + depth
        self.mask = torch.cat([self.mask, torch.ones(B, m, dtype=self.mask.dtype, device=dev)], dim=1)
        self.slot_pos = torch.cat([self.slot_pos, positions], dim=1)
        self._last_m = m
        neg = torch.finfo(dtype).min

        def additive(ok: torch.Tensor) -> torch.Tensor:
            return torch.zeros(ok.shape, dtype=dtype, device=dev).masked_fill(~ok, neg)[:, None]

        attn = additive(allowed)
        if self.window is not None:
            # Sliding layers hold at most window-1 past slots (cropped after every forward) and
            # see keys less than `window` positions back.
            past = self.num_slots - m
            kept = past if past < self.window else self.window - 1
            cols = slice(past - kept, None)
            near = (positions[:, :, None] - self.slot_pos[:, None, cols]) < self.window
            sliding = additive(allowed[:, :, cols] & near)
            # Gemma-style models mix both layer types and take one mask per type; Mistral-style
            # models (no layer_types) slide on every layer and take the one mask
            attn = {"full_attention": attn, "sliding_attention": sliding} if self.mixed_window else sliding
        return self.model(
            input_ids=input_ids,
            attention_mask=attn,
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
            output_hidden_states=output_hidden_states,
        )

    def keep(self, keep_idx: list[list[int]]) -> None:
        """After a forward over m inputs, keep per row only the inputs at the given increasing
        indices (0..m-1), moved to the front of the new block (the accepted path of a tree);
        the cache is compacted with a gather, then cropped."""
        m = self._last_m
        B = self.mask.shape[0]
        dev = self.mask.device
        L = max((len(k) for k in keep_idx), default=0)
        idx = torch.zeros(B, max(L, 1), dtype=torch.long, device=dev)
        ok = torch.zeros(B, max(L, 1), dtype=self.mask.dtype, device=dev)
        for r, k in enumerate(keep_idx):
            if k:
                idx[r, : len(k)] = torch.as_tensor(k, device=dev)
                ok[r, : len(k)] = 1
        idx, ok = idx[:, :L], ok[:, :L]
        for layer in self.cache.layers:
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if t is None or t.dim() != 4 or t.shape[2] < m:
                    continue
                base = t.shape[2] - m
                gi = idx[:, None, :, None].expand(t.shape[0], t.shape[1], L, t.shape[3])
                t[:, :, base: base + L] = t[:, :, base:].gather(2, gi)
        S0 = self.num_slots - m
        self.slot_pos[:, S0: S0 + L] = self.slot_pos[:, S0:].gather(1, idx)
        self.mask[:, S0: S0 + L] = ok
        self.mask[:, S0 + L:] = 0
        self.truncate(self.lengths)
