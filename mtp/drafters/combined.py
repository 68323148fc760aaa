"""Prompt lookup first, a trained drafter elsewhere.

Prompt lookup is free and, where the output repeats the context (summaries, RAG answers, edits,
follow-ups on an earlier answer), drafts long runs that a small head cannot; a head drafts
everywhere else. `LookupFirstDrafter` asks prompt lookup first, per row and per step: when the
latest `min_ngram`-gram (or a longer one, up to `max_ngram`) occurred earlier in the row's
context, it copies up to `lookup_tokens` of what followed; otherwise the row gets the fallback
drafter's proposal. The fallback observes every target forward either way, so its state (an
EAGLE head's draft cache) stays current on the steps it did not draft.

Lossless like its parts: lookup drafts are deterministic, so at T > 0 their rows carry a
point-mass q (the same rule the engine applies to a deterministic drafter) beside the fallback's
sampled rows.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from mtp.drafters.base import Draft, DraftContext, Drafter, TargetFeedback
from mtp.drafters.ngram import lookup_continuation


class LookupFirstDrafter(Drafter):
    def __init__(self, fallback: Drafter, lookup_tokens: int = 10, min_ngram: int = 2, max_ngram: int = 3) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        if lookup_tokens < 1:
            raise ValueError(f"lookup_tokens must be >= 1, got {lookup_tokens}")
        self.fallback = fallback
        self.lookup_tokens, self.min_ngram, self.max_ngram = lookup_tokens, min_ngram, max_ngram
        self.num_draft_tokens = max(lookup_tokens, fallback.num_draft_tokens)
        self.hidden_layers = tuple(fallback.hidden_layers)
        #: steps drafted by lookup / by the fallback (per generation; for reports)
        self.lookup_steps = self.fallback_steps = 0

    def reset(self, prompts: list[list[int]]) -> None:
        self.lookup_steps = self.fallback_steps = 0
        self.fallback.reset(prompts)

    def for_row(self, row: int) -> "LookupFirstDrafter":
        fb = self.fallback.for_row(row)
        if fb is self.fallback:
            return self
        return LookupFirstDrafter(fb, self.lookup_tokens, self.min_ngram, self.max_ngram)

    def observe(self, feedback: TargetFeedback) -> None:
        self.fallback.observe(feedback)

    def propose(self, ctx: DraftContext) -> Draft:
        B = len(ctx.sequences)
        n = min(ctx.max_tokens, self.lookup_tokens)
        chains = [self._lookup(seq, n) if act and n > 0 else [] for seq, act in zip(ctx.sequences, ctx.active)]
        need = [act and not c for act, c in zip(ctx.active, chains)]
        self.lookup_steps += sum(bool(c) for c in chains)
        if not any(need):
            return Draft.from_lists(chains, ctx.device)
        self.fallback_steps += sum(need)
        fb = self.fallback.propose(replace(ctx, max_tokens=min(ctx.max_tokens, self.fallback.num_draft_tokens),
                                           active=need))
        if not any(chains):
            return fb
        return _merge(chains, need, fb, ctx.device)


    def _lookup(self, seq: list[int], n: int) -> list[int]:
        return lookup_continuation(seq, self.max_ngram, n, self.min_ngram)


def _merge(chains: list[list[int]], use_fb: list[bool], fb: Draft, device) -> Draft:
    """Rows with use_fb take the fallback's draft, the others their lookup chain (as a path-shaped
    tree when the fallback drafts trees; with point-mass q when it reports probabilities)."""
    B = len(chains)
    N = max([fb.max_len] + [len(c) for c in chains])
    tokens = torch.zeros(B, N, dtype=torch.long, device=device)
    lengths = torch.zeros(B, dtype=torch.long, device=device)
    parents = None if fb.parents is None else torch.full((B, N), -1, dtype=torch.long, device=device)
    probs = None
    if fb.probs is not None:
        probs = torch.zeros(B, N, fb.probs.shape[-1], dtype=fb.probs.dtype, device=device)
    for r in range(B):
        if use_fb[r]:
            m = int(fb.lengths[r])
            tokens[r, : fb.max_len] = fb.tokens[r].to(device)
            lengths[r] = m
            if parents is not None:
                parents[r, : fb.max_len] = fb.parents[r].to(device)
            if probs is not None:
                probs[r, : fb.max_len] = fb.probs[r].to(device)
        elif chains[r]:
            c = torch.as_tensor(chains[r], dtype=torch.long, device=device)
            tokens[r, : len(c)] = c
            lengths[r] = len(c)
            if parents is not None:
                parents[r, : len(c)] = torch.arange(-1, len(c) - 1, device=device)
            if probs is not None:
                probs[r, torch.arange(len(c), device=device), c] = 1.0
    return Draft(tokens, lengths, probs, parents)
