"""The adaptive union: per row and step, what to verify.

`AdaptiveUnionDrafter` chooses per row and step between the union, lookup's chain alone, the
fallback's draft alone, no draft (a plain one-token step) and, where the fallback is a head drafting
trees and `chain_tokens` is set, the head's chain (fewer nodes to verify and to draft than its tree;
greedy at T = 0, sampled with its q at T > 0, where one sampled draft is accepted about as often as
three top-k tree nodes). It keeps running estimates of how many drafts each proposal gets accepted on the steps it
was verified (lookup's and the union's per bucket of how far back lookup's match agrees with the
context), knows the machine's verify-cost curve C(m) and the fallback's drafting time, and verifies
the proposal predicted to commit the most tokens per second. On a prompt that lookup copies, the
head's nodes are dropped (the union verified 26-27 tokens for lookup's 11 there); where lookup's
chain keeps failing, the chain is; where the head's tree costs more time than its accepted tokens
save (a weak head), its chain (when offered) is tried, and where that does not pay either, both are
dropped. The choice depends only on earlier steps, so the output is as lossless as each of the
proposals.
"""
from __future__ import annotations

import time
from bisect import bisect_right
from dataclasses import dataclass, replace
from typing import Callable

import torch

from mtp.drafters.base import Draft, DraftContext, Drafter, TargetFeedback
from mtp.drafters.combined import LookupUnionDrafter, graft
from mtp.drafters.ngram import LOOKUP_PREFER, lookup_match


#: a lookup match is put in a bucket by how far back the context agrees with it (its agreement,
#: mtp.drafters.ngram.lookup_match): 1 (a lone token matched), 2, 3, 4-5, 6-9, 10-15, 16 or more
AGREEMENT_BUCKETS = (2, 3, 4, 6, 10, 16)


class LookupSurvival:
    """How far lookup's chains of one agreement bucket get accepted, per position: kept[j] / risk[j]
    estimates P(draft j accepted | drafts 1..j-1 accepted), from the steps that verified a chain
    reaching position j (a chain accepted whole says nothing about the position after its end). The
    prior, 0.8 of an accept in one try per position, lets a bucket try longer chains than it has seen
    (simulated: 0.8 / 1 and 3 / 4 alike, 0.5 / 2 1% slower on passage tasks)."""

    PRIOR = (0.8, 1.0)

    def __init__(self, max_len: int) -> None:
        self.kept = [self.PRIOR[0]] * (max_len + 1)
        self.risk = [self.PRIOR[1]] * (max_len + 1)

    def observe(self, length: int, accepted: int, censored: bool) -> None:
        """A verified chain of `length` drafts whose first `accepted` were accepted; `censored`: the
        step did not show whether the next one would have been (the chain or the output ended)."""
        for j in range(1, min(accepted, length) + 1):
            self.kept[j] += 1
            self.risk[j] += 1
        if accepted < length and not censored:
            self.risk[accepted + 1] += 1

    def best_length(self, costs: list[float]) -> int:
        """The chain length (at least 1) with the most predicted tokens per second alone, (1 + expected
        accepted drafts) / costs[K], where costs[K] is the verify cost of 1 + K tokens."""
        s, expect, best, best_k = 1.0, 0.0, 0.0, 1
        for k in range(1, len(costs)):
            s *= self.kept[k] / self.risk[k]
            expect += s
            rate = (1.0 + expect) / costs[k]
            if rate > best:
                best, best_k = rate, k
        return best_k


@dataclass
class _Estimates:
    """Running estimates, for lookup matches of one agreement bucket, of the drafts lookup's chain
    alone and the union get accepted (None: not verified yet), the steps since the last union, and
    (adaptive_length) the per-position acceptance that sets the bucket's chain length."""

    lookup: float | None = None
    union: float | None = None
    since_union: int = 0
    survival: LookupSurvival | None = None


@dataclass
class _Pending:
    """What one row's last step verified, for `observe`."""

    mode: str | None = None
    chain: tuple[int, ...] = ()
    bucket: int = 0
    tree: tuple[list[int], list[int]] | None = None  # the fallback's (tokens, parents)
    head_chain: tuple[int, ...] = ()  # the fallback head's chain ("chain" steps)


class AdaptiveUnionDrafter(LookupUnionDrafter):
    """Per row and step the union, lookup's chain alone ("lookup"), the fallback's draft alone
    ("heads"), the fallback head's chain of `chain_tokens` ("chain", off by default) or no
    draft at all ("plain": a one-token step), whichever is predicted to commit the most tokens per
    second (see the module doc). The chain is drafted as the head's chains are: greedy at T = 0,
    sampled at T > 0 (at the head drafter's draft_temperature), verified against its q.

    verify_cost(m): seconds of a target forward over m tokens at this batch size on this machine
    (mtp.costmodel.measure_forward_cost, interpolated). The predicted rate of a proposal is
    (1 + expected accepted drafts) / (C(tokens verified) + drafting seconds).

    What lookup's chain will get accepted depends on how well its match agrees with the context: a
    3-gram inside a copied passage agrees for dozens of tokens, a chance 2-gram for two or three. So
    the estimates for lookup alone and for the union are kept per agreement bucket
    (`AGREEMENT_BUCKETS`); the head's (`heads`) is one. They are pooled over rows and kept across
    generations, so the drafter learns while it runs (a generation's tau depends on what ran before
    it; its output does not). A bucket verifies the union until it has both estimates, and again
    after `explore` of its steps without one: the estimates learn only from verified proposals (one
    that was not verified cannot be counted: it might have gone on past what was committed), so
    these steps refresh a bucket's union. Likewise the fallback drafts again after `explore` plain
    steps in a row (where its draft was predicted to cost more than it commits: a weak head, or a
    sampled tree at T > 0), and the head's chain is verified again after `explore` steps without it
    where the tree or a plain step was chosen. `smoothing` is the weight of the newest step in
    every running estimate; `head_smoothing` (None: `smoothing`) overrides it for the fallback's and
    the head chain's acceptance, whose single steps are noisy where acceptance is near a coin flip
    (T > 0): there a dip below the plain step's rate costs `explore` plain steps.

    Lookup: the latest 1- to 3-gram (`min_ngram`, `max_ngram`; prompt lookup's own default is 1-2),
    at the occurrence whose context agrees furthest back, the latest of those (`prefer="agreement"`;
    "first": the earliest, as prompt lookup). A lone token's match is a bucket of its own, so where such chains
    do not pay the chooser learns to leave them out; with `min_ngram=2`, as before round 15, a step
    where only one token matched had no lookup chain at all and drafted with the head, also where
    lookup alone would have copied (summaries: the chooser verified the head's tree alone on 55% of
    their steps). Chosen on distilled data (docs/results/lookup15/sim_lookup.py), not the suite.

    Lookup's chain length: `lookup_tokens` drafts. With `adaptive_length` (off by default) each
    bucket sets its own, up to `lookup_tokens`, from the per-position acceptance its verified chains
    showed and the verify-cost curve: the length whose (1 + expected accepted drafts) / C(1 + length)
    is largest (`LookupSurvival`), so a copied passage's bucket grows its chains while a lone token's
    keeps a few. Round 16: simulated for lookup alone on distilled data, against a fixed 10, it
    measured 1.36x -> 1.42x on chat answers and 2.48x -> 2.63x on passage tasks
    (docs/results/lookup16/sim_length.py). In the union with the demo's head, up to 32
    (docs/results/lookup16/ab_length.py), it measured 2.00 / 1.52x -> 1.94 / 1.45x on 20 chat
    prompts off the suite (the same summed wall time) and 2.16 / 1.56x -> 2.05 / 1.51x on the demo's
    6 suite prompts. No gain, so off.

    chain_tokens: drafts in the "chain" choice (0: no such choice), for a fallback head that drafts
    trees (`offers_chain`, `propose_chain(ctx, sampled=True)`). At T > 0 the chain is sampled from
    the head's q and verified against it (round 21); a head drafter with draft_temperature 0 drafts
    its argmax instead, a point mass, as every chain choice did before. Off by default: on
    smollm2-135m the greedy chain replaced a third of the plain steps and measured +1% at T=0, +0.1%
    at T=1 (round 11).
    `modes` lists the choices this drafter has; `mode_steps` counts the rows' steps per choice (per
    generation).
    """

    MODES = ("union", "lookup", "heads", "chain", "plain")

    def __init__(self, fallback: Drafter, verify_cost: Callable[[int], float], lookup_tokens: int = 10,
                 min_ngram: int = 1, max_ngram: int = 3, smoothing: float = 0.2, explore: int = 8,
                 chain_tokens: int = 0, prefer: str = "agreement", adaptive_length: bool = False,
                 head_smoothing: float | None = None) -> None:
        super().__init__(fallback, lookup_tokens, min_ngram, max_ngram)
        self.adaptive_length = adaptive_length
        if prefer not in LOOKUP_PREFER:
            raise ValueError(f"prefer must be one of {LOOKUP_PREFER} (mtp.drafters.ngram.lookup_match), got {prefer!r}")
        self.prefer = prefer
        can_chain = bool(getattr(fallback, "offers_chain", False))
        if chain_tokens < 0 or (chain_tokens and not can_chain):
            raise ValueError(f"chain_tokens={chain_tokens}: needs >= 0, and > 0 only with a fallback that offers a "
                             "chain beside its own draft (offers_chain and propose_chain: a head drafting trees)")
        self.chain_tokens = chain_tokens
        self.modes = tuple(m for m in self.MODES if m != "chain" or chain_tokens)
        if not 0 < smoothing <= 1 or not (head_smoothing is None or 0 < head_smoothing <= 1):
            raise ValueError(f"smoothing and head_smoothing must be in (0, 1], got {smoothing}, {head_smoothing}")
        self.head_smoothing = head_smoothing
        if explore < 1:
            raise ValueError(f"explore must be >= 1, got {explore}")
        self.verify_cost, self.smoothing, self.explore = verify_cost, smoothing, explore
        self.mode_steps = dict.fromkeys(self.modes, 0)
        self.buckets = [_Estimates(survival=LookupSurvival(lookup_tokens) if adaptive_length else None)
                        for _ in range(len(AGREEMENT_BUCKETS) + 1)]
        self._costs = [verify_cost(1 + k) for k in range(lookup_tokens + 1)] if adaptive_length else []
        self.heads: float | None = None  # drafts the fallback's draft gets accepted
        self.nodes: int | None = None  # the fallback draft's size, last step
        self.draft_s: float | None = None  # the fallback's propose time per step
        self.since_heads = 0  # plain steps since the fallback's draft was last verified
        self.chain: float | None = None  # drafts the head's chain gets accepted
        self.chain_s: float | None = None  # its drafting time per step
        self.since_chain = 0  # steps choosing the tree or a plain step since the chain was last verified
        self._rows: list[_Pending] = []

    def reset(self, prompts: list[list[int]]) -> None:
        super().reset(prompts)
        self.mode_steps = dict.fromkeys(self.modes, 0)
        self._rows = [_Pending() for _ in prompts]

    def for_row(self, row: int) -> "AdaptiveUnionDrafter":
        fb = self.fallback.for_row(row)
        if fb is self.fallback:
            return self
        return type(self)(fb, self.verify_cost, self.lookup_tokens, self.min_ngram, self.max_ngram, self.smoothing,
                          self.explore, self.chain_tokens, self.prefer, self.adaptive_length, self.head_smoothing)

    def choose(self, est: _Estimates, chain_len: int) -> str:
        """The proposal predicted to commit the most tokens per second for a lookup chain of chain_len
        tokens (0: no match) whose bucket has the estimates est."""
        if self.heads is None or self.nodes is None:
            return "union" if chain_len else "heads"
        C, D = self.verify_cost, self.draft_s or 0.0
        rate = {"heads": (1 + self.heads) / (C(1 + self.nodes) + D), "plain": 1 / C(1)}
        if chain_len:
            if None in (est.lookup, est.union) or est.since_union >= self.explore:
                return "union"
            a_l = min(est.lookup, chain_len)
            a_u = max(est.union, a_l, self.heads)  # the union keeps the longer of the two
            rate["union"] = (1 + a_u) / (C(1 + chain_len + self.nodes) + D)
            rate["lookup"] = (1 + a_l) / C(1 + chain_len)
        if self.chain_tokens and self.chain is not None:
            rate["chain"] = (1 + self.chain) / (C(1 + self.chain_tokens) + (self.chain_s or 0.0))
        best = max((m for m in self.MODES if m in rate), key=rate.__getitem__)  # ties: the first in MODES
        if best == "plain" and self.since_heads >= self.explore:
            return "union" if chain_len else "heads"  # refresh the fallback's estimate
        if best in ("heads", "plain") and self.chain_tokens and (self.chain is None or self.since_chain >= self.explore):
            return "chain"  # estimate the head's chain, or refresh its estimate
        return best

    def _match(self, seq: list[int], n: int) -> tuple[list[int], int]:
        """(lookup's chain, its agreement)."""
        return lookup_match(seq, self.max_ngram, n, self.min_ngram, prefer=self.prefer)

    def propose(self, ctx: DraftContext) -> Draft:
        if len(self._rows) != len(ctx.sequences):
            self._rows = [_Pending() for _ in ctx.sequences]
        n = min(ctx.max_tokens, self.lookup_tokens)
        chains: list[list[int]] = []
        for seq, act, row in zip(ctx.sequences, ctx.active, self._rows):
            chain, agree = self._match(seq, n) if act and n > 0 else ([], 0)
            row.bucket = bisect_right(AGREEMENT_BUCKETS, agree)
            surv = self.buckets[row.bucket].survival
            if surv is not None and chain:
                chain = chain[: surv.best_length(self._costs)]
            row.mode = self.choose(self.buckets[row.bucket], len(chain)) if act else None
            row.chain = tuple(chain) if row.mode in ("union", "lookup") else ()
            row.tree = None
            chains.append(list(row.chain))
            if row.mode is not None:
                self.mode_steps[row.mode] += 1
                if chain and row.mode != "union":
                    self.buckets[row.bucket].since_union += 1
                if row.mode == "plain":
                    self.since_heads += 1
                if row.mode in ("heads", "plain"):
                    self.since_chain += 1
        self.lookup_steps += sum(bool(c) for c in chains)
        hc = self._propose_head_chains(ctx, chains)
        need = [row.mode in ("union", "heads") for row in self._rows]
        if not any(need):
            return self._with_chain_q(Draft.from_lists(chains, ctx.device), hc)
        self.fallback_steps += sum(need)
        t0 = time.perf_counter()
        fb = self._propose_fallback(ctx, need)
        self._remember(fb, need)
        dt = time.perf_counter() - t0
        self.draft_s = self._update(self.draft_s, dt)
        if not any(chains):
            return fb
        return self._with_chain_q(graft(chains, fb, ctx.device, use_fb=need), hc)

    def _propose_head_chains(self, ctx: DraftContext, chains: list[list[int]]) -> Draft | None:
        """The head's chain for the rows that chose "chain", put in their place in `chains` (with no
        fallback nodes beside it, `graft` verifies it alone); returns the head's Draft (its q, when
        sampled), or None when no row chose it."""
        want = [row.mode == "chain" for row in self._rows]
        if not any(want):
            return None
        self.fallback_steps += sum(want)
        t0 = time.perf_counter()
        hc = self.fallback.propose_chain(replace(ctx, max_tokens=min(ctx.max_tokens, self.chain_tokens), active=want),
                                         sampled=True)
        toks, lens = hc.tokens.tolist(), hc.lengths.tolist()
        self.chain_s = self._update(self.chain_s, time.perf_counter() - t0)
        for r, row in enumerate(self._rows):
            if want[r]:
                row.head_chain = tuple(toks[r][: int(lens[r])])
                chains[r] = list(row.head_chain)
        return hc

    def _with_chain_q(self, draft: Draft, hc: Draft | None) -> Draft:
        """The draft with the q each sampled head chain was drawn from in its rows (they hold the
        chain alone, in order: Draft.from_lists or `graft` without fallback nodes); every other node
        is deterministic, a point mass. Unchanged when no chain was sampled (greedy, or :dt0)."""
        if hc is None or hc.probs is None:
            return draft
        probs = draft.probs
        if probs is None:
            B, N = draft.tokens.shape
            probs = torch.zeros(B, N, hc.probs.shape[-1], dtype=hc.probs.dtype, device=draft.tokens.device)
            real = (torch.arange(N, device=probs.device)[None, :] < draft.lengths[:, None]).to(probs.dtype)
            probs.scatter_(-1, draft.tokens.unsqueeze(-1), real.unsqueeze(-1))
        for r, row in enumerate(self._rows):
            if row.mode == "chain" and row.head_chain:
                n = len(row.head_chain)
                probs[r, :n] = hc.probs[r, :n].to(probs.device, probs.dtype)
        return replace(draft, probs=probs)

    def _remember(self, fb: Draft, need: list[bool]) -> None:
        toks, lens = fb.tokens.tolist(), fb.lengths.tolist()  # (a sync: the drafting time includes it)
        pars = None if fb.parents is None else fb.parents.tolist()
        for r, row in enumerate(self._rows):
            if need[r]:
                m = int(lens[r])
                row.tree = (toks[r][:m], list(range(-1, m - 1)) if pars is None else pars[r][:m])
                self.nodes = m

    def observe(self, feedback: TargetFeedback) -> None:
        super().observe(feedback)
        if feedback.is_prefill:
            return
        for r, row in enumerate(self._rows):
            got = feedback.new_tokens[r] if r < len(feedback.new_tokens) else []
            if row.mode is None or not got:
                continue
            est = self.buckets[row.bucket]
            if row.chain:  # verified alone or in the union
                m = _chain_match(row.chain, got)
                est.lookup = self._update(est.lookup, m)
                if est.survival is not None:
                    est.survival.observe(len(row.chain), m, censored=m >= len(got))
            hs = self.head_smoothing
            if row.tree is not None:
                self.heads = self._update(self.heads, _tree_match(*row.tree, got), hs)
                self.since_heads = 0
            if row.mode == "union" and row.chain:
                est.union = self._update(est.union, int(feedback.num_accepted[r]))
                est.since_union = 0
            if row.mode == "chain":
                self.chain = self._update(self.chain, _chain_match(row.head_chain, got), hs)
                self.since_chain = 0

    def _update(self, old: float | None, x: float, smoothing: float | None = None) -> float:
        """A running estimate after one more observation x (weight `smoothing`, default self.smoothing)."""
        w = self.smoothing if smoothing is None else smoothing
        return float(x) if old is None else old + w * (x - old)


def _chain_match(chain: tuple[int, ...], got: list[int]) -> int:
    """Drafts of the chain that the committed tokens agree with."""
    m = 0
    while m < len(chain) and m < len(got) and chain[m] == got[m]:
        m += 1
    return m


def _tree_match(tokens: list[int], parents: list[int], got: list[int]) -> int:
    """_chain_match for a token tree: the depth of the deepest node on the committed tokens' path."""
    cur, m = -1, 0
    for t in got:
        nxt = next((i for i in range(len(tokens)) if parents[i] == cur and tokens[i] == t), None)
        if nxt is None:
            break
        cur, m = nxt, m + 1
    return m
