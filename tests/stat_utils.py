"""Goodness-of-fit helpers for the losslessness tests."""
from __future__ import annotations

import torch

from statistics import NormalDist


def chi2_critical(dof: int, alpha: float = 1e-4) -> float:
    """Upper-tail chi-square critical value (Wilson-Hilferty; within ~1% of the exact value for
    dof >= 3). A correct sampler fails one seeded test with probability about alpha."""
    z = NormalDist().inv_cdf(1 - alpha)
    return dof * (1 - 2 / (9 * dof) + z * (2 / (9 * dof)) ** 0.5) ** 3


def chi2_stat(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson chi-square of observed counts against a distribution; cells with zero probability
    must have zero counts (else inf). Returns (statistic, degrees of freedom)."""
    counts = counts.double().flatten()
    probs = probs.double().flatten()
    n = counts.sum()
    support = probs > 0
    if (counts[~support] > 0).any():
        return float("inf"), int(support.sum()) - 1
    expected = n * probs[support]
    stat = ((counts[support] - expected) ** 2 / expected).sum()
    return float(stat), int(support.sum()) - 1
