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
    cache.crop(-num_remove)


class KVState:
    """A cache plus the per-row slot mask [B, S] and positions of a batch of sequences."""

    def __init__(self, model: torch.nn.Module, batch_size: int, device: torch.device) -> None:
        self.model = model
        self.cache = new_cache(model)
        self.mask = torch.zeros(batch_size, 0, dtype=torch.long, device=device)

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
