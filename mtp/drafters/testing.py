"""Drafters for tests: one whose drafts are always right, one whose drafts are noise."""
from __future__ import annotations

import torch

from mtp.drafters.base import Draft, DraftContext, Drafter


class OracleDrafter(Drafter):
    """Proposes the known continuation (e.g. the target's own greedy output): everything is
    accepted, so tau == k + 1 except where the continuation ends."""

    def __init__(self, continuations: list[list[int]], num_draft_tokens: int = 4) -> None:
        self.continuations = [list(c) for c in continuations]
        self.num_draft_tokens = num_draft_tokens
        self._prompt_lens: list[int] = []

    def reset(self, prompts: list[list[int]]) -> None:
        if len(prompts) != len(self.continuations):
            raise ValueError(f"OracleDrafter has {len(self.continuations)} continuations for {len(prompts)} rows")
        self._prompt_lens = [len(p) for p in prompts]

    def propose(self, ctx: DraftContext) -> Draft:
        chains = []
        for r, seq in enumerate(ctx.sequences):
            done = len(seq) - self._prompt_lens[r]  # tokens generated so far, pending included
            chains.append(self.continuations[r][done: done + ctx.max_tokens] if ctx.active[r] else [])
        return Draft.from_lists(chains, ctx.device)


class RandomDrafter(Drafter):
    """Proposes uniformly random tokens. With report_probs=True it reports q = uniform (the
    distribution the tokens really come from); otherwise it acts as a deterministic drafter."""

    def __init__(self, vocab_size: int, num_draft_tokens: int = 4, seed: int = 0, report_probs: bool = True) -> None:
        self.vocab_size = vocab_size
        self.num_draft_tokens = num_draft_tokens
        self.report_probs = report_probs
        self._gen = torch.Generator().manual_seed(seed)

    def propose(self, ctx: DraftContext) -> Draft:
        B, K = len(ctx.sequences), ctx.max_tokens
        tokens = torch.randint(0, self.vocab_size, (B, K), generator=self._gen).to(ctx.device)
        lengths = torch.tensor([K if a else 0 for a in ctx.active], device=ctx.device)
        probs = None
        if self.report_probs and not ctx.sampling.greedy:
            probs = torch.full((B, K, self.vocab_size), 1.0 / self.vocab_size, device=ctx.device)
        return Draft(tokens, lengths, probs)
