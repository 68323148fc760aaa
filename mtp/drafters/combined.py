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

`LookupUnionDrafter` verifies both in the same forward: the fallback always drafts, and where
lookup finds a match its chain is grafted into the fallback's draft as one more branch of a token
tree, so a step keeps whichever of the two the target agrees with for longer. Deterministic drafts
(greedy chains, any head tree) are merged as a trie: the lookup chain follows the fallback's nodes
while they hold the same tokens and branches off where they differ, so siblings stay distinct.
Sampled chains (T > 0) keep their q; the lookup branch joins them at the root with a point-mass q,
and the tree's recursive rejection sampling tries the sampled child first, then the lookup child
against the residual distribution. Each child is an independent proposal with its own q, which
is what that rule needs to stay exact (SpecInfer's multi-draft sampling).

`AdaptiveUnionDrafter` (mtp.drafters.adaptive) chooses per row and step between the union, lookup's
chain alone, the fallback's draft alone and no draft, from the acceptance seen so far and the
machine's verify-cost curve.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from mtp.drafters.base import Draft, DraftContext, Drafter
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
        return type(self)(fb, self.lookup_tokens, self.min_ngram, self.max_ngram)

    def observe(self, feedback: TargetFeedback) -> None:
        self.fallback.observe(feedback)

    def propose(self, ctx: DraftContext) -> Draft:
        chains = self._lookup_chains(ctx)
        need = [act and not c for act, c in zip(ctx.active, chains)]
        if not any(need):
            return Draft.from_lists(chains, ctx.device)
        self.fallback_steps += sum(need)
        fb = self._propose_fallback(ctx, need)
        if not any(chains):
            return fb
        return _merge(chains, need, fb, ctx.device)

    def _propose_fallback(self, ctx: DraftContext, active: list[bool]) -> Draft:
        """The fallback's proposal for the rows in `active`, at most its own draft length."""
        return self.fallback.propose(replace(ctx, max_tokens=min(ctx.max_tokens, self.fallback.num_draft_tokens),
                                             active=active))

    def _lookup_chains(self, ctx: DraftContext) -> list[list[int]]:
        """Each active row's lookup chain (empty where nothing matches); counted in lookup_steps."""
        n = min(ctx.max_tokens, self.lookup_tokens)
        chains = [self._lookup(seq, n) if act and n > 0 else [] for seq, act in zip(ctx.sequences, ctx.active)]
        self.lookup_steps += sum(bool(c) for c in chains)
        return chains

    def _lookup(self, seq: list[int], n: int) -> list[int]:
        return lookup_continuation(seq, self.max_ngram, n, self.min_ngram)


class LookupUnionDrafter(LookupFirstDrafter):
    """Prompt lookup and the fallback drafter in one verify: lookup's chain grafted into the
    fallback's draft (see the module doc). `lookup_steps` counts steps with a grafted chain."""

    def propose(self, ctx: DraftContext) -> Draft:
        chains = self._lookup_chains(ctx)
        fb = self._propose_fallback(ctx, ctx.active)
        self.fallback_steps += sum(ctx.active)
        if not any(chains):
            return fb
        return graft(chains, fb, ctx.device)


def graft(chains: list[list[int]], fb: Draft, device, use_fb: list[bool] | None = None) -> Draft:
    """A tree Draft per row: the fallback's draft (a chain becomes a path) with the row's lookup
    chain added as a branch; shared with the fallback's nodes as a trie when probs is None, a
    separate root branch with point-mass q otherwise. Rows with use_fb False get no fallback nodes."""
    B = len(chains)
    fb_tok, fb_len = fb.tokens.tolist(), fb.lengths.tolist()
    fb_par = None if fb.parents is None else fb.parents.tolist()
    rows: list[tuple[list[int], list[int], list[int]]] = []  # tokens, parents, source (fb index or -1-lookup index)
    for r in range(B):
        m = int(fb_len[r]) if use_fb is None or use_fb[r] else 0
        toks = fb_tok[r][:m]
        pars = list(range(-1, m - 1)) if fb_par is None else fb_par[r][:m]
        src = list(range(m))
        cur = -1
        for j, t in enumerate(chains[r]):
            child = None
            if fb.probs is None:  # deterministic nodes: follow an equal sibling, if any
                child = next((i for i in range(len(toks)) if pars[i] == cur and toks[i] == t), None)
            if child is None:
                toks.append(t)
                pars.append(cur)
                src.append(-1 - j)
                child = len(toks) - 1
            cur = child
        rows.append((toks, pars, src))
    tree = Draft.from_trees([(t, p) for t, p, _ in rows], device)
    if fb.probs is None:
        return tree
    probs = torch.zeros(B, tree.max_len, fb.probs.shape[-1], dtype=fb.probs.dtype, device=device)
    for r, (t, _, src) in enumerate(rows):
        for i, s in enumerate(src):
            if s >= 0:
                probs[r, i] = fb.probs[r, s].to(device)
            else:
                probs[r, i, t[i]] = 1.0
    return replace(tree, probs=probs)


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
