"""Prompt lookup (n-gram) drafting, as HF's `prompt_lookup_num_tokens`."""
from __future__ import annotations

import torch

from mtp.drafters.base import Draft, DraftContext, Drafter


def lookup_continuation(seq: list[int], max_ngram: int, max_tokens: int, min_ngram: int = 1) -> list[int]:
    """Find the sequence's last n-gram earlier in the sequence (largest n first, earliest match
    first, as HF's PromptLookupCandidateGenerator) and return up to max_tokens tokens that followed it."""
    L = len(seq)
    if L < 2 or max_tokens <= 0:
        return []
    t = torch.as_tensor(seq, dtype=torch.long)
    for n in range(min(max_ngram, L - 1), min_ngram - 1, -1):
        windows = t.unfold(0, n, 1)  # [L-n+1, n]
        hits = (windows == t[-n:]).all(-1).nonzero().flatten().tolist()
        for idx in hits:
            start = idx + n
            end = min(start + max_tokens, L)
            if start < end:
                return seq[start:end]
    return []


class PromptLookupDrafter(Drafter):
    """Drafts by copying what followed the latest n-gram's earlier occurrence.

    num_draft_tokens: tokens to copy (HF's `prompt_lookup_num_tokens`, default 10 there).
    max_ngram: largest n-gram to match (HF's `max_matching_ngram_size`, default 2).
    """

    def __init__(self, num_draft_tokens: int = 10, max_ngram: int = 2, min_ngram: int = 1) -> None:
        if max_ngram < min_ngram or min_ngram < 1:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.num_draft_tokens = num_draft_tokens
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram

    def propose(self, ctx: DraftContext) -> Draft:
        chains = [
            lookup_continuation(seq, self.max_ngram, ctx.max_tokens, self.min_ngram) if act else []
            for seq, act in zip(ctx.sequences, ctx.active)
        ]
        return Draft.from_lists(chains, ctx.device)
