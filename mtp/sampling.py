"""Sampling and the acceptance rule: one pure function for greedy and lossless speculative sampling.

Shapes: B = batch rows, K = draft tokens per row (padded), V = vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingConfig:
    """How the target distribution p (and any draft distribution q) is shaped.

    temperature <= 0 means greedy. top_k / top_p are applied after temperature, in that order
    (as HF `generate` does), identically to p and q.
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def logits_to_probs(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Turn logits [..., V] into the sampling distribution [..., V] (float32).

    Greedy gives the one-hot distribution of the argmax, so the sampling rule below reduces to
    exact greedy verification.
    """
    x = logits.float()
    if cfg.greedy:
        return torch.nn.functional.one_hot(x.argmax(-1), x.shape[-1]).to(torch.float32)
    x = x / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < x.shape[-1]:
        kth = torch.topk(x, cfg.top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_x, idx = torch.sort(x, dim=-1, descending=True)
        sorted_p = sorted_x.softmax(-1)
        # Drop a token when the mass strictly before it already reaches top_p (the first is always kept).
        drop_sorted = (sorted_p.cumsum(-1) - sorted_p) >= cfg.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return x.softmax(-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Draw one token per row from probs [B, V] -> [B]."""
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)) row-wise; falls back to p where p <= q everywhere (rejection then has
    probability zero, so any choice is exact)."""
    r = (p - q).clamp_min(0.0)
    mass = r.sum(-1, keepdim=True)
    return torch.where(mass > 0, r / mass.clamp_min(torch.finfo(r.dtype).tiny), p)


def verify_chain(
    target_logits: torch.Tensor,
    draft_tokens: torch.Tensor,
    draft_lengths: torch.Tensor,
    cfg: SamplingConfig,
    draft_probs: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept a prefix of each row's draft chain and choose the next token.

    Args:
        target_logits: [B, K+1, V] target logits at [last token, d_1 .. d_K]; position i
            predicts the token after d_i (position 0 predicts d_1).
        draft_tokens: [B, K] proposed tokens (padding past a row's length is ignored).
        draft_lengths: [B] number of real drafts per row (0..K).
        cfg: sampling config shaping p (and q, which the drafter shaped the same way).
        draft_probs: [B, K, V] the distribution q each draft was sampled from, or None for a
            deterministic drafter (q is then the point mass at the drafted token; the rule stays
            exact for any way of choosing the token).
        generator: explicit RNG for the uniform draws and the resampling.

    Returns:
        num_accepted [B] (0..draft_lengths) and next_token [B]: the correction token sampled
        from norm(max(0, p - q)) at the first rejection, or the bonus token from p after a fully
        accepted chain. With cfg.greedy this is exactly greedy decoding: accept while the draft
        equals the target argmax, then emit the argmax.
    """
    B, K1, V = target_logits.shape
    K = K1 - 1
    device = target_logits.device
    draft_tokens = draft_tokens.to(device)
    draft_lengths = draft_lengths.to(device)
    valid = torch.arange(K, device=device)[None, :] < draft_lengths[:, None]  # [B, K]
    rows = torch.arange(B, device=device)

    if cfg.greedy:
        # Same rule as below with one-hot p, without V-sized tensors: u*q(x) < p(x) iff x == argmax.
        target_argmax = target_logits.argmax(-1)  # [B, K+1]
        ok = (draft_tokens == target_argmax[:, :K]) & valid
        n = ok.long().cumprod(-1).sum(-1)
        return n, target_argmax[rows, n]

    p = logits_to_probs(target_logits, cfg)  # [B, K+1, V]
    px = p[:, :K].gather(-1, draft_tokens.unsqueeze(-1)).squeeze(-1)  # [B, K]
    if draft_probs is None:
        qx = torch.ones_like(px)
    else:
        qx = draft_probs.to(p.dtype).gather(-1, draft_tokens.unsqueeze(-1)).squeeze(-1)
    u = torch.rand(px.shape, generator=generator, device=device, dtype=p.dtype)
    ok = (u * qx < px) & valid  # accept with probability min(1, p/q)
    n = ok.long().cumprod(-1).sum(-1)  # [B]

    p_n = p[rows, n]  # [B, V]: target distribution at the first rejected (or bonus) position
    rejected = n < draft_lengths
    if draft_probs is None:
        q_n = torch.zeros_like(p_n)
        if K > 0:
            x_n = draft_tokens[rows, n.clamp_max(K - 1)]
            q_n[rows, x_n] = 1.0
    else:
        q_n = draft_probs.to(p.dtype)[rows, n.clamp_max(max(K - 1, 0))] if K > 0 else torch.zeros_like(p_n)
    q_n = q_n * rejected[:, None].to(p.dtype)  # no subtraction for the bonus token
    next_token = sample(residual_distribution(p_n, q_n), generator)
    return n, next_token
