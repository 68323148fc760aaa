"""Prompt lookup (n-gram) drafting, as HF's `prompt_lookup_num_tokens`."""
from __future__ import annotations

import torch

from mtp.drafters.base import Draft, DraftContext, Drafter


def _ngram_hits(seq: list[int], max_ngram: int, min_ngram: int):
    """(n, idx) for each earlier occurrence seq[idx:idx + n] of the sequence's last n-gram that has
    a continuation: largest n first, earliest match first (HF's PromptLookupCandidateGenerator)."""
    L = len(seq)
    t = torch.as_tensor(seq, dtype=torch.long)
    for n in range(min(max_ngram, L - 1), min_ngram - 1, -1):
        windows = t.unfold(0, n, 1)  # [L-n+1, n]
        for idx in (windows == t[-n:]).all(-1).nonzero().flatten().tolist():
            if idx + n < L:
                yield n, idx


def lookup_continuations(seq: list[int], max_ngram: int, max_tokens: int, min_ngram: int = 1,
                         max_matches: int = 1) -> list[list[int]]:
    """Find the sequence's last n-gram earlier in the sequence (largest n first, earliest match
    first, as HF's PromptLookupCandidateGenerator) and return what followed it (up to max_tokens
    tokens) for up to max_matches distinct matches, all of the largest n that matched."""
    if len(seq) < 2 or max_tokens <= 0:
        return []
    found: list[list[int]] = []
    found_n = None
    for n, idx in _ngram_hits(seq, max_ngram, min_ngram):
        if found and n != found_n:
            break
        cont = seq[idx + n: idx + n + max_tokens]
        if cont not in found:
            found.append(cont)
            found_n = n
            if len(found) >= max_matches:
                break
    return found


def lookup_continuation(seq: list[int], max_ngram: int, max_tokens: int, min_ngram: int = 1) -> list[int]:
    """The first continuation of `lookup_continuations` (HF's prompt lookup), or []."""
    found = lookup_continuations(seq, max_ngram, max_tokens, min_ngram, 1)
    return found[0] if found else []


#: lookup_match's choices of occurrence
LOOKUP_PREFER = ("first", "agreement")


def agreement(seq: list[int], n: int, idx: int, max_agree: int = 32) -> int:
    """How many tokens back from the end seq agrees with the context before its earlier occurrence
    seq[idx: idx + n] of its last n-gram: at least n, at most max_agree."""
    L, agree = len(seq), n
    while agree < max_agree and idx - 1 - (agree - n) >= 0 and seq[idx - 1 - (agree - n)] == seq[L - 1 - agree]:
        agree += 1
    return agree


def lookup_match(seq: list[int], max_ngram: int, max_tokens: int, min_ngram: int = 1,
                 max_agree: int = 32, prefer: str = "first") -> tuple[list[int], int]:
    """(a lookup chain, its agreement): how many tokens back from the end the sequence agrees with
    the context before the match (at least the matched n-gram's n; capped at max_agree). A long
    agreement means the output is copying a passage; ([], 0) without a match.

    prefer: which occurrence of the largest n-gram that matched: "first" (the earliest, as prompt
    lookup: the chain is lookup_continuation's) or "agreement" (the one agreeing furthest back,
    the latest of those: where the output is most likely copying from)."""
    if prefer not in LOOKUP_PREFER:
        raise ValueError(f"prefer must be one of {LOOKUP_PREFER}, got {prefer!r}")
    if len(seq) < 2 or max_tokens <= 0:
        return [], 0
    best: tuple[int, int, int] | None = None  # (agreement, n, idx)
    for n, idx in _ngram_hits(seq, max_ngram, min_ngram):
        if best is not None and n != best[1]:
            break  # only the largest n that matched
        agree = agreement(seq, n, idx, max_agree)
        if best is None or agree >= best[0]:
            best = (agree, n, idx)
        if prefer == "first":
            break
    if best is None:
        return [], 0
    agree, n, idx = best
    return seq[idx + n: idx + n + max_tokens], agree


def trie(chains: list[list[int]]) -> tuple[list[int], list[int]]:
    """Merge chains into a token tree: (tokens, parents) in topological order (mtp.tree layout)."""
    tokens: list[int] = []
    parents: list[int] = []
    index: dict[tuple[int, int], int] = {}
    for chain in chains:
        par = -1
        for tok in chain:
            key = (par, tok)
            if key not in index:
                index[key] = len(tokens)
                tokens.append(tok)
                parents.append(par)
            par = index[key]
    return tokens, parents


class PromptLookupDrafter(Drafter):
    """Drafts by copying what followed the latest n-gram's earlier occurrence.

    num_draft_tokens: tokens to copy (HF's `prompt_lookup_num_tokens`, default 10 there).
    max_ngram: largest n-gram to match (HF's `max_matching_ngram_size`, default 2).
    branches: > 1 drafts a tree: the continuations of up to this many distinct matches, merged
        into a trie (verified in one forward).
    """

    def __init__(self, num_draft_tokens: int = 10, max_ngram: int = 2, min_ngram: int = 1, branches: int = 1) -> None:
        if max_ngram < min_ngram or min_ngram < 1:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        if branches < 1:
            raise ValueError(f"branches must be >= 1, got {branches}")
        self.num_draft_tokens = num_draft_tokens
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram
        self.branches = branches

    def propose(self, ctx: DraftContext) -> Draft:
        if self.branches > 1:
            trees = [trie(lookup_continuations(seq, self.max_ngram, ctx.max_tokens, self.min_ngram, self.branches))
                     if act else ([], []) for seq, act in zip(ctx.sequences, ctx.active)]
            return Draft.from_trees(trees, ctx.device)
        chains = [
            lookup_continuation(seq, self.max_ngram, ctx.max_tokens, self.min_ngram) if act else []
            for seq, act in zip(ctx.sequences, ctx.active)
        ]
        return Draft.from_lists(chains, ctx.device)
