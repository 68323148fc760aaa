"""Token trees: structure, attention masks, static trees (hand-written or searched), and lossless
tree verification (greedy: longest path of argmax matches; sampling: multi-draft recursive
rejection sampling, SpecInfer / EAGLE style).

A batch of trees is stored flat in topological order: node i of row b has token tokens[b, i] and
parent parents[b, i] (-1 = the root, i.e. the pending token; otherwise an earlier node index).
Fed to the target as [pending, node_0 .. node_{N-1}], so node i sits at input index i + 1.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import torch

from mtp.sampling import SamplingConfig, logits_to_probs, residual_distribution, sample


def node_depths(parents: torch.Tensor) -> torch.Tensor:
    """[B, N] depth of each node (children of the root have depth 1)."""
    B, N = parents.shape
    depth = torch.zeros(B, N, dtype=torch.long, device=parents.device)
    for i in range(N):
        p = parents[:, i]
        depth[:, i] = torch.where(p < 0, 1, depth.gather(1, p.clamp_min(0)[:, None]).squeeze(1) + 1)
    return depth


def ancestor_matrix(parents: torch.Tensor, num_nodes: torch.Tensor | None = None) -> torch.Tensor:
    """[B, N+1, N+1] bool: entry [b, i, j] is True when input j (0 = root, k+1 = node k) is input
    i itself or one of its ancestors. Padding nodes (index >= num_nodes) see only the root."""
    B, N = parents.shape
    dev = parents.device
    anc = torch.zeros(B, N + 1, N + 1, dtype=torch.bool, device=dev)
    anc[:, 0, 0] = True
    valid = torch.ones(B, N, dtype=torch.bool, device=dev) if num_nodes is None else (
        torch.arange(N, device=dev)[None, :] < num_nodes.to(dev)[:, None])
    for i in range(N):
        par_in = (parents[:, i].clamp_min(-1) + 1)  # parent's input index (root = 0)
        row = anc[torch.arange(B, device=dev), par_in].clone()
        row = torch.where(valid[:, i, None], row, anc[:, 0].clone())
        row[:, i + 1] = True
        anc[:, i + 1] = row
    return anc


@dataclass
class StaticTree:
    """A fixed tree shape from Medusa-style choices: each choice is a path of candidate ranks,
    e.g. (0,) = top-1 at depth 1, (0, 2) = top-3 at depth 2 under the top-1 at depth 1.
    Nodes are sorted by depth then rank path, so parents come first."""

    choices: list[tuple[int, ...]]

    def __post_init__(self) -> None:
        ch = sorted({tuple(c) for c in self.choices}, key=lambda c: (len(c), c))
        known = set(ch)
        for c in ch:
            if len(c) == 0:
                raise ValueError("empty choice: the root is implicit")
            if len(c) > 1 and c[:-1] not in known:
                raise ValueError(f"choice {c} has no parent {c[:-1]} in the tree")
            if any(r < 0 for r in c):
                raise ValueError(f"choice {c} has a negative rank")
        self.choices = ch
        index = {c: i for i, c in enumerate(ch)}
        self.parents = [index[c[:-1]] if len(c) > 1 else -1 for c in ch]
        self.depths = [len(c) for c in ch]
        self.ranks = [c[-1] for c in ch]

    @property
    def size(self) -> int:
        return len(self.choices)

    @property
    def depth(self) -> int:
        return max(self.depths, default=0)

    @property
    def max_rank(self) -> int:
        return max(self.ranks, default=-1) + 1

    @classmethod
    def chain(cls, length: int) -> "StaticTree":
        return cls([(0,) * d for d in range(1, length + 1)])

    def expected_accept_length(self, acc: list[list[float]]) -> float:
        """1 + sum over nodes of P(path accepted), with acc[d][r] the probability that the rank-r
        candidate at depth d+1 is right given its parent was (Medusa-style independence)."""
        total = 1.0
        for c in self.choices:
            p = 1.0
            for d, r in enumerate(c):
                p *= acc[d][r] if d < len(acc) and r < len(acc[d]) else 0.0
            total += p
        return total


def best_static_tree(acc: list[list[float]], budget: int) -> StaticTree:
    """The tree of at most `budget` nodes with the largest expected accepted length, from measured
    per-depth top-k acceptance acc[d][r]. Path probabilities only shrink along a path, so taking
    nodes best-first from the root's children is optimal (a node is never better than its parent)."""
    if budget < 1:
        raise ValueError("budget must be >= 1")
    heap = [(-acc[0][r], (r,)) for r in range(len(acc[0])) if acc[0][r] > 0] if acc else []
    heapq.heapify(heap)
    chosen: list[tuple[int, ...]] = []
    while heap and len(chosen) < budget:
        negp, c = heapq.heappop(heap)
        chosen.append(c)
        d = len(c)
        if d < len(acc):
            for r in range(len(acc[d])):
                if acc[d][r] > 0:
                    heapq.heappush(heap, (negp * acc[d][r], c + (r,)))
    if not chosen:
        raise ValueError("no candidate has positive acceptance")
    return StaticTree(chosen)


def verify_tree(
    target_logits: torch.Tensor,
    tokens: torch.Tensor,
    parents: torch.Tensor,
    num_nodes: torch.Tensor,
    cfg: SamplingConfig,
    draft_probs: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[list[list[int]], torch.Tensor]:
    """Accept a path of each row's tree and choose the next token.

    Args:
        target_logits: [B, N+1, V] at [pending, node_0..node_{N-1}].
        tokens, parents: [B, N] the tree (see module doc); num_nodes: [B] real nodes per row.
        draft_probs: [B, N, V] the distribution node i was drawn from, where siblings are i.i.d.
            draws from their shared q; None for deterministic nodes (siblings must be distinct).
    Returns:
        (paths, next_token): per row the accepted node indices root-to-leaf, and [B] the token
        sampled from the (residual) target distribution at the path's end.

    Sampling: at each node, try its children in order; accept child x with probability
    min(1, p(x)/q(x)); after a rejection p <- norm(max(0, p - q)). Greedy (cfg.greedy) makes p
    one-hot, so this is the longest path whose tokens match the target's argmax.
    """
    B = target_logits.shape[0]
    p_all = logits_to_probs(target_logits, cfg)  # one-hot at T=0
    tok_l, par_l, n_l = tokens.tolist(), parents.tolist(), num_nodes.tolist()
    paths, next_tokens = [], []
    for b in range(B):
        children: dict[int, list[int]] = {}
        for i in range(int(n_l[b])):
            children.setdefault(par_l[b][i], []).append(i)
        cur, path = -1, []  # -1: the root (input index 0)
        p = p_all[b, 0]
        while True:
            accepted = None
            for c in children.get(cur, []):
                x = tok_l[b][c]
                if draft_probs is None:
                    q = torch.zeros_like(p)
                    q[x] = 1.0
                else:
                    q = draft_probs[b, c].to(p.dtype)
                if cfg.greedy:
                    ok = bool(p[x] > 0.5)
                else:
                    u = torch.rand((), generator=generator, device=p.device, dtype=p.dtype)
                    ok = bool(u * q[x] < p[x])
                if ok:
                    accepted = c
                    break
                p = residual_distribution(p, q)
            if accepted is None:
                break
            path.append(accepted)
            cur = accepted
            p = p_all[b, accepted + 1]
        paths.append(path)
        next_tokens.append(p.argmax() if cfg.greedy else sample(p[None], generator)[0])
    return paths, torch.stack(next_tokens).to(target_logits.device)


@dataclass
class DynamicTreeConfig:
    """EAGLE-2 style dynamic trees (defaults as EAGLE-2: total_tokens=60, depth=7, top_k=10)."""

    total_tokens: int = 60
    depth: int = 7
    top_k: int = 10


def build_dynamic_tree(expand, cfg: DynamicTreeConfig, max_depth: int | None = None,
                       vocab: list[int] | None = None, scores_out: list[float] | None = None) -> tuple[list[int], list[int]]:
    """Grow one row's tree by cumulative draft confidence (EAGLE-2).

    expand(tokens, parents, nodes) -> [len(nodes), V] next-token log-probabilities after each
    requested node of the current tree (-1: the root, i.e. after the pending token). Depth by depth, the top_k frontier nodes (by
    cumulative log-prob) each propose their top_k children; after the last depth every node is
    ranked by cumulative log-prob and the best total_tokens kept (a child never scores above its
    parent, so the kept set is a tree). Returns (tokens, parents) in topological order.
    vocab: the token id of each column of expand's output (a reduced draft vocabulary), if not the
    column index itself; tokens (and the paths expand is given) are then those ids.
    scores_out: a list to receive each kept node's cumulative log-prob (for analyses of the tree).
    """
    depth = cfg.depth if max_depth is None else min(cfg.depth, max_depth)
    tokens: list[int] = []
    parents: list[int] = []
    scores: list[float] = []
    frontier = [-1]  # node indices whose children are expanded next (-1: root)
    for _ in range(depth):
        logp = expand(tokens, parents, frontier)
        cands = []  # (score, parent, token)
        for fi, f in enumerate(frontier):
            base = 0.0 if f < 0 else scores[f]
            top = logp[fi].topk(cfg.top_k)
            for v, t in zip(top.values.tolist(), top.indices.tolist()):
                cands.append((base + v, f, t if vocab is None else vocab[t]))
        cands.sort(key=lambda c: -c[0])
        new_nodes = []
        for s, f, t in cands[: cfg.top_k]:
            tokens.append(t)
            parents.append(f)
            scores.append(s)
            new_nodes.append(len(tokens) - 1)
        frontier = new_nodes
    # Keep the best total_tokens nodes (ties broken by index so parents come first).
    order = sorted(range(len(tokens)), key=lambda i: (-scores[i], i))[: cfg.total_tokens]
    keep = sorted(order)
    remap = {old: new for new, old in enumerate(keep)}
    if scores_out is not None:
        scores_out[:] = [scores[i] for i in keep]
    return [tokens[i] for i in keep], [remap[parents[i]] if parents[i] >= 0 else -1 for i in keep]


def _fill_by_depth(tree: StaticTree, next_logits, fill) -> list[int]:
    """Walk a static tree depth by depth with one next_logits call per depth, over the paths of the
    nodes that have children there; fill(logits [V], kids) -> the kids' tokens (target ids)."""
    tokens = [0] * tree.size
    by_parent: dict[int, list[int]] = {}
    for i, par in enumerate(tree.parents):
        by_parent.setdefault(par, []).append(i)

    def path_of(i: int) -> list[int]:
        out = []
        while i >= 0:
            out.append(tokens[i])
            i = tree.parents[i]
        return out[::-1]

    for d in range(0, tree.depth):
        parents_here = [p for p in by_parent if (p < 0 and d == 0) or (p >= 0 and tree.depths[p] == d)]
        if not parents_here:
            continue
        logits = next_logits([path_of(p) if p >= 0 else [] for p in parents_here])
        for li, par in enumerate(parents_here):
            kids = by_parent[par]
            for k, t in zip(kids, fill(logits[li], kids)):
                tokens[k] = t
    return tokens


def sample_static_tree(tree: StaticTree, next_logits, cfg: SamplingConfig, generator: torch.Generator | None = None,
                       to_target=None) -> tuple[list[int], list[int], torch.Tensor]:
    """Fill a static tree's shape for one row with *sampled* nodes: a node's children are i.i.d.
    draws from q, the draft distribution after the node's path shaped by cfg (as the target's p
    is), so `verify_tree` accepts them with recursive rejection sampling (lossless; duplicates
    allowed). The shape is fixed before any draw, as that requires; ranks only count children.
    next_logits as in fill_static_tree; to_target(q [Vd]) -> q [V] when its columns are a draft
    vocabulary (zero outside it). Returns (tokens, parents, q [N, V] over the target's vocabulary)."""
    if cfg.greedy:
        raise ValueError("sample_static_tree needs a sampling config (T > 0); greedy trees use fill_static_tree")
    probs: list[torch.Tensor | None] = [None] * tree.size

    def fill(logits: torch.Tensor, kids: list[int]) -> list[int]:
        q = logits_to_probs(logits, cfg)
        if to_target is not None:
            q = to_target(q)
        for k in kids:
            probs[k] = q
        return torch.multinomial(q, len(kids), replacement=True, generator=generator).tolist()

    tokens = _fill_by_depth(tree, next_logits, fill)
    return tokens, list(tree.parents), torch.stack(probs) if probs else torch.zeros(0, 0)


def fill_static_tree(tree: StaticTree, next_logits, vocab: list[int] | None = None) -> tuple[list[int], list[int]]:
    """Fill a static tree for one row: each node takes the candidate of its rank from the draft
    distribution after its parent's path. next_logits(paths: list[list[int]]) -> [len(paths), V]
    logits after each token path (the empty path: after the pending token). Siblings are
    distinct top-k candidates, so the drafts are deterministic (lossless with probs None).
    vocab: as in build_dynamic_tree (the token id of each column of next_logits' output)."""

    def fill(logits: torch.Tensor, kids: list[int]) -> list[int]:
        top = logits.topk(max(tree.ranks[k] for k in kids) + 1).indices.tolist()
        return [top[tree.ranks[k]] if vocab is None else vocab[top[tree.ranks[k]]] for k in kids]

    return _fill_by_depth(tree, next_logits, fill), list(tree.parents)
