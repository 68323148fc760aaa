"""The one Drafter every head family uses: bookkeeping here, the family's model code in the head.

A head that drafts implements three hooks:
    state = head.draft_state(batch_size, device)
    head.draft_observe(state, hs, counts, seqs)   # new committed positions' target hidden states
    head.draft_chain(state, seqs, K, pick)        # calls pick(logits [B, V]) -> tokens [B] K times
A head with a reduced draft vocabulary (`head.draft_vocab`, d2t [Vd]) gives logits over it,
[B, Vd]: the drafter picks there and maps the pick to target ids (pick returns target ids), and
only a sampled draft's q is spread over the target's vocabulary, for verification.
`hs[layer]` is [B, n, H] with each row's newly committed positions packed to the left (counts[r]
of them); `seqs[r]` is the committed sequence with the pending token last, so a row holds
len(seqs[r]) - 1 target hidden states in all and the new ones are the last counts[r] of them.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from mtp.drafters.base import Draft, DraftContext, Drafter, TargetFeedback
from mtp.sampling import SamplingConfig, logits_to_probs, sample


def pack_valid(valid: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """valid [B, m] bool -> (index [B, n], mask [B, n]): each row's first counts[r] valid
    positions, in order, left-aligned (n = max count)."""
    B, m = valid.shape
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)  # valid first, in order
    n = int(counts.max().item()) if B else 0
    mask = torch.arange(n, device=valid.device)[None, :] < counts[:, None]
    return order[:, :n], mask


class HeadDrafter(Drafter):
    """Drafts a chain from the target hidden state at each row's last committed position.

    Greedy: argmax drafts, probs None. T>0: each draft is sampled from its own distribution
    shaped by ctx.sampling (same temperature / top-k / top-p as the target), reported as q, unless
    draft_temperature says otherwise.
    """

    def __init__(self, head, num_draft_tokens: int | None = None, tree=None,
                 draft_temperature: float | None = None, sample_tree: bool = False) -> None:
        """tree: None for chains; an mtp.tree.StaticTree (Medusa-style choices) or an
        mtp.tree.DynamicTreeConfig (EAGLE-2 style) to draft token trees of top-k candidates.
        draft_temperature: how a chain drafts when the target samples (T > 0). None: from the head's
        distribution at the target's temperature; 0: the head's argmax, a point mass that
        verification accepts with the target's probability of it; t > 0: from the head's
        distribution at temperature t (the target's top-k / top-p kept). Every choice is lossless;
        which accepts most depends on how close the head's distribution is to the target's.
        Trees take deterministic top-k nodes, unless sample_tree: then, when the target samples, a
        static tree's nodes are i.i.d. draws from the head's distribution after their parent's path
        (mtp.tree.sample_static_tree), which accept more than top-k nodes at T=1 when q is close
        to p; greedy decoding still takes top-k nodes."""
        if draft_temperature is not None and draft_temperature < 0:
            raise ValueError(f"draft_temperature must be None or >= 0, got {draft_temperature}")
        from mtp.tree import StaticTree

        if sample_tree and not isinstance(tree, StaticTree):
            raise ValueError("sample_tree needs a StaticTree (a shape fixed before the draws), got "
                             f"{type(tree).__name__}")
        self.sample_tree = sample_tree
        self.head = head
        self.tree = tree
        self.draft_temperature = draft_temperature
        self.num_draft_tokens = int(num_draft_tokens if num_draft_tokens is not None else head.config.num_heads)
        if tree is not None:
            self.num_draft_tokens = tree.depth
        self.hidden_layers = tuple(head.config.hidden_layers)
        #: most tokens the head can draft per step (None: any number)
        self.max_chain: int | None = head.max_draft_tokens
        d2t = head.draft_vocab  # the draft vocabulary's target ids (None: none), for trees
        self._d2t_list = None if d2t is None else d2t.tolist()
        self._state = None
        self._seqs: list[list[int]] = []

    def _device(self) -> torch.device:
        return next(self.head.parameters()).device

    def reset(self, prompts: list[list[int]]) -> None:
        self._seqs = [list(p) for p in prompts]
        self._state = self.head.draft_state(len(prompts), self._device())

    @torch.no_grad()
    def observe(self, feedback: TargetFeedback) -> None:
        assert self._state is not None, "reset() was not called"
        valid = feedback.valid.bool()
        counts = valid.long().sum(1)
        if not feedback.is_prefill:
            # Only committed tokens count (finished rows commit nothing; EOS may cut a chain).
            counts = torch.minimum(counts, torch.tensor([len(t) for t in feedback.new_tokens], device=counts.device))
        for r, toks in enumerate(feedback.new_tokens):
            self._seqs[r].extend(toks)
        idx, mask = pack_valid(valid, counts)
        dev, dtype = self._device(), next(self.head.parameters()).dtype
        hs = {}
        for layer in self.hidden_layers:
            h = feedback.hidden_states[layer]
            hs[layer] = h.gather(1, idx.to(h.device)[..., None].expand(-1, -1, h.shape[-1])).to(dev, dtype)
        self.head.draft_observe(self._state, hs, counts.to(dev), self._seqs)

    @torch.no_grad()
    def propose(self, ctx: DraftContext) -> Draft:
        return self._propose(ctx, tree=self.tree is not None)

    @property
    def offers_chain(self) -> bool:
        """Whether `propose_chain` offers something other than `propose` (a drafter that drafts trees)."""
        return self.tree is not None

    @torch.no_grad()
    def propose_chain(self, ctx: DraftContext, sampled: bool = False) -> Draft:
        """The head's chain of up to ctx.max_tokens drafts from the same state, whatever its tree
        setting (for a drafter that chooses per step between the tree and the chain). sampled False:
        greedy at any temperature (deterministic drafts, which verification treats as point masses);
        True: drafted as this drafter's chains are (at T > 0 sampled, per draft_temperature, with q)."""
        return self._propose(ctx if sampled else replace(ctx, sampling=SamplingConfig()), tree=False)

    def _propose(self, ctx: DraftContext, tree: bool) -> Draft:
        assert self._state is not None, "reset() was not called"
        K = ctx.max_tokens if self.max_chain is None else min(ctx.max_tokens, self.max_chain)
        B = len(ctx.sequences)
        if K <= 0:
            return Draft.empty(B, ctx.device)
        if tree:
            return self._propose_tree(ctx, K)
        tokens: list[torch.Tensor] = []
        probs: list[torch.Tensor] = []

        dt = self.draft_temperature
        sampling = ctx.sampling if dt is None or dt == 0 else replace(ctx.sampling, temperature=dt)

        def pick(logits: torch.Tensor) -> torch.Tensor:
            if ctx.sampling.greedy or dt == 0:
                i = logits.argmax(-1)
            else:
                q = logits_to_probs(logits, sampling)
                i = sample(q, ctx.generator)
                probs.append(self._over_target_vocab(q))
            t = self._target_ids(i)
            tokens.append(t)
            return t

        self.head.draft_chain(self._state, self._seqs, K, pick)
        tok = torch.stack(tokens, 1).to(ctx.device)
        lengths = torch.tensor([K if a else 0 for a in ctx.active], device=ctx.device)
        return Draft(tok, lengths, torch.stack(probs, 1).to(ctx.device) if probs else None)

    def _target_ids(self, i: torch.Tensor) -> torch.Tensor:
        """Column indices of the head's logits -> target token ids."""
        d2t = self.head.draft_vocab
        return i if d2t is None else d2t[i]

    def _over_target_vocab(self, q: torch.Tensor) -> torch.Tensor:
        """Probabilities [B, Vd] over the draft vocabulary -> [B, V] (zero outside it)."""
        d2t = self.head.draft_vocab
        if d2t is None:
            return q
        return q.new_zeros(*q.shape[:-1], self.head.config.vocab_size).index_copy(-1, d2t, q)

    def _next_logits(self, paths: list[list[int]]) -> torch.Tensor:
        """[B, V] (or [B, Vd]) the head's logits for the token after each row's forced draft path (all paths
        the same length), through the family's own draft_chain; the head's state is unchanged."""
        d = len(paths[0])
        dev = self._device()
        forced = torch.tensor(paths, dtype=torch.long, device=dev) if d else None
        out: list[torch.Tensor] = []

        def pick(logits: torch.Tensor) -> torch.Tensor:
            step = len(out)
            out.append(logits)
            if step < d:
                return forced[:, step]
            return self._target_ids(logits.argmax(-1))

        self.head.draft_chain(self._state, self._seqs, d + 1, pick)
        return out[d]

    def _propose_tree(self, ctx: DraftContext, max_depth: int) -> Draft:
        """Top-k token trees (deterministic distinct siblings: lossless at any temperature). Each
        node's candidates come from the head's distribution after the node's path, evaluated by
        re-running the family's chain with the path forced (heads are cheap next to the target).
        Candidates are ranked over the draft vocabulary and mapped to target ids (vocab=)."""
        from mtp.tree import DynamicTreeConfig, StaticTree, build_dynamic_tree, fill_static_tree, sample_static_tree

        B = len(ctx.sequences)
        trees = []
        sampled = self.sample_tree and not ctx.sampling.greedy
        node_probs: list[torch.Tensor | None] = []
        for r in range(B):
            if not ctx.active[r]:
                trees.append(([], []))
                node_probs.append(None)
                continue
            rows = getattr(self.head, "tree_expander_rows", False)  # its expander takes one row of a batch
            batched = hasattr(self.head, "tree_expander") and (B == 1 or rows)
            if batched:  # one head forward per tree depth, over the whole frontier
                expander = (self.head.tree_expander(self._state, self._seqs, row=r) if rows
                            else self.head.tree_expander(self._state, self._seqs))

                def next_logits(paths, expander=expander):
                    return expander(paths).float()
            else:
                def next_logits(paths, r=r):
                    rows = []
                    for path in paths:  # rows of the batch other than r just follow the same path
                        rows.append(self._next_logits([list(path)] * B)[r])
                    return torch.stack(rows, 0).float()

            if isinstance(self.tree, StaticTree):
                tree = self.tree
                if tree.depth > max_depth:
                    tree = StaticTree([c for c in tree.choices if len(c) <= max_depth])
                if sampled:
                    toks, pars, q = sample_static_tree(tree, next_logits, ctx.sampling, ctx.generator,
                                                       to_target=self._over_target_vocab)
                    trees.append((toks, pars))
                    node_probs.append(q)
                else:
                    trees.append(fill_static_tree(tree, next_logits, vocab=self._d2t_list))
            elif isinstance(self.tree, DynamicTreeConfig):
                def expand(tokens, parents, nodes):
                    paths = []
                    for n in nodes:
                        path = []
                        while n >= 0:
                            path.append(tokens[n])
                            n = parents[n]
                        paths.append(path[::-1])
                    # group by path length: draft_chain runs one length at a time
                    return next_logits(paths).log_softmax(-1)

                trees.append(build_dynamic_tree(expand, self.tree, max_depth=max_depth, vocab=self._d2t_list))
            else:
                raise TypeError(f"tree must be a StaticTree or DynamicTreeConfig, got {type(self.tree).__name__}")
            if batched:
                expander.close()
        draft = Draft.from_trees(trees, ctx.device)
        if not sampled:
            return draft
        V = int(self.head.config.vocab_size)
        probs = torch.zeros(B, draft.max_len, V, device=ctx.device)
        for r, q in enumerate(node_probs):
            if q is not None and q.numel():
                probs[r, : q.shape[0]] = q.to(ctx.device)
        return replace(draft, probs=probs)


def depth_expander(logits_at_depth):
    """A tree_expander for parallel heads (Medusa, Meta-style), whose logits after a path depend only
    on its length d (head d on the last committed state): logits_at_depth(d) -> [V], computed once
    per depth and shared by every node there."""
    cache: dict[int, torch.Tensor] = {}

    def next_logits(paths):
        for d in {len(p) for p in paths} - cache.keys():
            cache[d] = logits_at_depth(d)
        return torch.stack([cache[len(p)] for p in paths])

    next_logits.close = lambda: None
    return next_logits


def last_rows(x: torch.Tensor, counts: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
    """x [B, n, H] packed new positions -> [B, H] state at each row's last one (rows with no new
    position keep prev)."""
    B = x.shape[0]
    last = x[torch.arange(B, device=x.device), (counts - 1).clamp_min(0)]
    if prev is None:
        return last
    return torch.where((counts > 0)[:, None], last, prev)
