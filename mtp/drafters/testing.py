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

    def for_row(self, row: int) -> "OracleDrafter":
        return OracleDrafter([self.continuations[row]], self.num_draft_tokens)

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


class StaticTreeTestDrafter(Drafter):
    """Fills a static tree (mtp.tree.StaticTree) for tests: the rank-0 path at each depth carries
    the known continuation when one is given (so that path is accepted), every other node a
    random token distinct from its siblings."""

    def __init__(self, tree, vocab_size: int, continuations: list[list[int]] | None = None, seed: int = 0) -> None:
        self.tree = tree
        self.vocab_size = vocab_size
        self.continuations = continuations
        self.num_draft_tokens = tree.depth
        self._gen = torch.Generator().manual_seed(seed)
        self._prompt_lens: list[int] = []

    def for_row(self, row: int) -> "StaticTreeTestDrafter":
        if self.continuations is None:
            return self
        d = StaticTreeTestDrafter(self.tree, self.vocab_size, [self.continuations[row]])
        d._gen = self._gen  # one random stream, as in the batched call
        return d

    def reset(self, prompts: list[list[int]]) -> None:
        self._prompt_lens = [len(p) for p in prompts]

    def propose(self, ctx: DraftContext) -> Draft:
        nodes = [i for i, d in enumerate(self.tree.depths) if d <= ctx.max_tokens]
        remap = {old: new for new, old in enumerate(nodes)}
        B = len(ctx.sequences)
        tokens = torch.zeros(B, len(nodes), dtype=torch.long)
        for r, seq in enumerate(ctx.sequences):
            done = len(seq) - self._prompt_lens[r]
            for new, old in enumerate(nodes):
                choice = self.tree.choices[old]
                want = None
                if self.continuations is not None and all(c == 0 for c in choice):
                    cont = self.continuations[r]
                    j = done + len(choice) - 1
                    want = cont[j] if j < len(cont) else None
                tok = want if want is not None else int(torch.randint(0, self.vocab_size, (1,), generator=self._gen))
                if want is None and self.continuations is not None and all(c == 0 for c in choice[:-1]):
                    cont = self.continuations[r]
                    j = done + len(choice) - 1
                    if j < len(cont) and tok == cont[j]:
                        tok = (tok + 1) % self.vocab_size  # siblings stay distinct from the oracle node
                tokens[r, new] = tok
        # Siblings must be distinct for deterministic drafts: nudge duplicates.
        parents = [remap[self.tree.parents[o]] if self.tree.parents[o] >= 0 else -1 for o in nodes]
        for r in range(B):
            seen: dict[tuple[int, int], bool] = {}
            for i, par in enumerate(parents):
                while (par, int(tokens[r, i])) in seen:
                    tokens[r, i] = (tokens[r, i] + 1) % self.vocab_size
                seen[(par, int(tokens[r, i]))] = True
        lengths = torch.tensor([len(nodes) if a else 0 for a in ctx.active])
        return Draft(tokens.to(ctx.device), lengths.to(ctx.device), None,
                     torch.tensor([parents] * B, dtype=torch.long, device=ctx.device))
