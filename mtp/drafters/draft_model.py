"""A smaller causal LM (sharing the target's tokenizer) as the drafter, with its own KV cache."""
from __future__ import annotations

import torch

from mtp.drafters.base import Draft, DraftContext, Drafter
from mtp.kv import KVState
from mtp.sampling import logits_to_probs, sample


class DraftModelDrafter(Drafter):
    """Drafts k tokens autoregressively with `model`, greedy at T=0, else sampled from its own
    distribution shaped like the target's (that distribution is reported as q).

    The draft cache keeps every token that still agrees with the committed sequence and drops
    the rest, so each step feeds only the tokens the draft model has not seen.
    """

    def __init__(self, model: torch.nn.Module, num_draft_tokens: int = 4, vocab_size: int | None = None,
                 tree=None) -> None:
        """tree: an mtp.tree.DynamicTreeConfig to draft EAGLE-2 style dynamic trees (top-k children,
        deterministic, so lossless at any temperature) instead of chains."""
        self.model = model
        self.tree = tree
        self.num_draft_tokens = num_draft_tokens if tree is None else tree.depth
        # The target's vocabulary size, to pad q when the draft's embedding table is smaller.
        self.vocab_size = vocab_size
        self._kv: KVState | None = None
        self._cached: list[list[int]] = []

    def reset(self, prompts: list[list[int]]) -> None:
        device = next(self.model.parameters()).device
        self._kv = KVState(self.model, len(prompts), device)
        self._cached = [[] for _ in prompts]

    def _q(self, logits: torch.Tensor, ctx: DraftContext) -> torch.Tensor:
        q = logits_to_probs(logits, ctx.sampling)
        if self.vocab_size is not None and q.shape[-1] != self.vocab_size:
            if q.shape[-1] > self.vocab_size:
                raise ValueError(f"draft vocabulary {q.shape[-1]} is larger than the target's {self.vocab_size}")
            q = torch.nn.functional.pad(q, (0, self.vocab_size - q.shape[-1]))
        return q

    @torch.no_grad()
    def propose(self, ctx: DraftContext) -> Draft:
        assert self._kv is not None, "reset() was not called"
        kv, B, K = self._kv, len(ctx.sequences), ctx.max_tokens
        dev = kv.mask.device
        # 1. Keep the cached tokens that agree with the committed sequences (pending excluded:
        #    its logits are needed now).
        keep = []
        for r, seq in enumerate(ctx.sequences):
            cached, n = self._cached[r], 0
            limit = min(len(cached), len(seq) - 1)
            while n < limit and cached[n] == seq[n]:
                n += 1
            keep.append(n)
            self._cached[r] = cached[:n]
        kv.truncate(torch.tensor(keep, device=dev))
        # 2. Feed what each row has not seen (right-padded), then draft one token at a time.
        feeds = [seq[n:] for seq, n in zip(ctx.sequences, keep)]
        m = max(len(f) for f in feeds)
        ids = torch.zeros(B, m, dtype=torch.long, device=dev)
        mask = torch.zeros(B, m, dtype=torch.long, device=dev)
        for r, f in enumerate(feeds):
            ids[r, : len(f)] = torch.as_tensor(f, device=dev)
            mask[r, : len(f)] = 1
            self._cached[r].extend(f)
        last = torch.tensor([len(f) - 1 for f in feeds], device=dev)
        out = kv.forward(ids, mask)
        logits = out.logits[torch.arange(B, device=dev), last]
        if self.tree is not None:
            return self._propose_tree(ctx, logits)
        tokens, probs = [], []
        for i in range(K):
            if ctx.sampling.greedy:
                t = logits.argmax(-1)
            else:
                q = self._q(logits, ctx)
                t = sample(q, ctx.generator)
                probs.append(q)
            tokens.append(t)
            if i + 1 < K:
                out = kv.forward(t[:, None])
                logits = out.logits[:, -1]
                for r, tok in enumerate(t.tolist()):
                    self._cached[r].append(tok)
        tok = torch.stack(tokens, 1).to(ctx.device)
        lengths = torch.tensor([K if a else 0 for a in ctx.active], device=ctx.device)
        return Draft(tok, lengths, torch.stack(probs, 1).to(ctx.device) if probs else None)

    def _propose_tree(self, ctx: DraftContext, root_logits: torch.Tensor) -> Draft:
        """Dynamic trees from the draft model's own distribution. Each expansion re-feeds
        [pending, tree so far] with a tree mask over the committed cache, then rolls back (trees
        are small). Rows are expanded one at a time (a batch costs B times a row)."""
        from mtp.tree import build_dynamic_tree

        kv, B = self._kv, len(ctx.sequences)
        dev = kv.mask.device
        kv.truncate(kv.lengths - 1)  # drop the pending token: it is re-fed as the tree's root
        for r in range(B):
            self._cached[r] = self._cached[r][:-1]
        base = kv.lengths.clone()
        pend = torch.tensor([seq[-1] for seq in ctx.sequences], device=dev)
        trees = []
        for r in range(B):
            if not ctx.active[r]:
                trees.append(([], []))
                continue

            def expand(tokens, parents, nodes, r=r):
                if not tokens:
                    return root_logits[r: r + 1].float().log_softmax(-1).expand(len(nodes), -1)
                n = len(tokens)
                ids = torch.zeros(B, n + 1, dtype=torch.long, device=dev)
                ids[:, 0] = pend
                ids[r, 1:] = torch.as_tensor(tokens, device=dev)
                par = torch.full((B, n), -1, dtype=torch.long, device=dev)
                par[r] = torch.as_tensor(parents, device=dev)
                num = torch.zeros(B, dtype=torch.long, device=dev)
                num[r] = n
                out = kv.forward_tree(ids, par, num)
                kv.truncate(base)
                return out.logits[r, [i + 1 for i in nodes]].float().log_softmax(-1)

            trees.append(build_dynamic_tree(expand, self.tree, max_depth=ctx.max_tokens))
        return Draft.from_trees(trees, ctx.device)
