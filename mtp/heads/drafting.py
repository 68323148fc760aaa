"""The one Drafter every head family uses: bookkeeping here, the family's model code in the head.

A head that drafts implements three hooks:
    state = head.draft_state(batch_size, device)
    head.draft_observe(state, hs, counts, seqs)   # new committed positions' target hidden states
    head.draft_chain(state, seqs, K, pick)        # calls pick(logits [B, V]) -> tokens [B] K times
`hs[layer]` is [B, n, H] with each row's newly committed positions packed to the left (counts[r]
of them); `seqs[r]` is the committed sequence with the pending token last, so a row holds
len(seqs[r]) - 1 target hidden states in all and the new ones are the last counts[r] of them.
"""
from __future__ import annotations

import torch

from mtp.drafters.base import Draft, DraftContext, Drafter, TargetFeedback
from mtp.sampling import logits_to_probs, sample


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
    shaped by ctx.sampling (same temperature / top-k / top-p as the target), reported as q.
    """

    def __init__(self, head, num_draft_tokens: int | None = None) -> None:
        self.head = head
        self.num_draft_tokens = int(num_draft_tokens if num_draft_tokens is not None else head.config.num_heads)
        self.hidden_layers = tuple(head.config.hidden_layers)
        #: most tokens the head can draft per step (None: any number)
        self.max_chain: int | None = head.max_draft_tokens
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
        assert self._state is not None, "reset() was not called"
        K = ctx.max_tokens if self.max_chain is None else min(ctx.max_tokens, self.max_chain)
        B = len(ctx.sequences)
        if K <= 0:
            return Draft.empty(B, ctx.device)
        tokens: list[torch.Tensor] = []
        probs: list[torch.Tensor] = []

        def pick(logits: torch.Tensor) -> torch.Tensor:
            if ctx.sampling.greedy:
                t = logits.argmax(-1)
            else:
                q = logits_to_probs(logits, ctx.sampling)
                t = sample(q, ctx.generator)
                probs.append(q)
            tokens.append(t)
            return t

        self.head.draft_chain(self._state, self._seqs, K, pick)
        tok = torch.stack(tokens, 1).to(ctx.device)
        lengths = torch.tensor([K if a else 0 for a in ctx.active], device=ctx.device)
        return Draft(tok, lengths, torch.stack(probs, 1).to(ctx.device) if probs else None)


def last_rows(x: torch.Tensor, counts: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
    """x [B, n, H] packed new positions -> [B, H] state at each row's last one (rows with no new
    position keep prev)."""
    B = x.shape[0]
    last = x[torch.arange(B, device=x.device), (counts - 1).clamp_min(0)]
    if prev is None:
        return last
    return torch.where((counts > 0)[:, None], last, prev)
