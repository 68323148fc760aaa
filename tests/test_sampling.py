"""The acceptance rule: greedy is exact argmax matching; sampling is lossless (statistical tests
over tens of thousands of seeded trials, with a planted bug shown to fail the same test)."""
import pytest
import torch

import mtp.sampling as S
from mtp.sampling import SamplingConfig, logits_to_probs, verify_chain
from stat_utils import chi2_critical, chi2_stat

V = 8
N = 40_000


def _tables(seed: int, closeness: str):
    """Bigram target logits Lp[a] -> next-token logits, and a draft table Lq (close or far)."""
    g = torch.Generator().manual_seed(seed)
    Lp = torch.randn(V, V, generator=g) * 1.2
    if closeness == "close":
        Lq = Lp + 0.3 * torch.randn(V, V, generator=g)
    else:  # far: unrelated, and biased towards tokens the target finds unlikely
        Lq = -Lp + 0.5 * torch.randn(V, V, generator=g)
    return Lp, Lq


def _speculate_two_tokens(Lp, Lq, cfg, gen, k=2, with_q=True, draft_temperature=None):
    """One verify step of k=2 drafts from state x0 = 0, then (if needed) honest sampling, giving
    the first two emitted tokens of N independent trials."""
    x0 = torch.zeros(N, dtype=torch.long)
    P = logits_to_probs(Lp, cfg)
    Q = logits_to_probs(Lq, cfg)
    Qdraw = Q if draft_temperature is None else logits_to_probs(Lq, SamplingConfig(temperature=draft_temperature))
    d1 = torch.multinomial(Qdraw[x0], 1, generator=gen).squeeze(-1)
    d2 = torch.multinomial(Qdraw[d1], 1, generator=gen).squeeze(-1)
    drafts = torch.stack([d1, d2], 1)[:, :k]
    target_logits = torch.stack([Lp[x0], Lp[d1], Lp[d2]], 1)[:, : k + 1]
    q = torch.stack([Q[x0], Q[d1]], 1)[:, :k] if with_q else None
    n, nxt = verify_chain(target_logits, drafts, torch.full((N,), k), cfg, draft_probs=q, generator=gen)
    y1 = torch.where(n >= 1, d1, nxt)
    y2_plain = torch.multinomial(P[y1], 1, generator=gen).squeeze(-1)
    if k >= 2:
        y2 = torch.where(n >= 2, d2, torch.where(n == 1, nxt, y2_plain))
    else:
        y2 = torch.where(n >= 1, nxt, y2_plain)
    counts = torch.zeros(V, V)
    counts.index_put_((y1, y2), torch.ones(N), accumulate=True)
    joint = P[0][:, None] * P  # P(y1 | x0) * P(y2 | y1)
    return counts, joint, n


CFGS = [
    SamplingConfig(temperature=1.0),
    SamplingConfig(temperature=0.7, top_k=5),
    SamplingConfig(temperature=1.3, top_p=0.8),
]


@pytest.mark.parametrize("closeness", ["close", "far"])
@pytest.mark.parametrize("cfg", CFGS, ids=["T1", "T0.7-topk5", "T1.3-topp0.8"])
def test_speculative_sampling_matches_target_distribution(closeness, cfg):
    Lp, Lq = _tables(1, closeness)
    gen = torch.Generator().manual_seed(123)
    counts, joint, n = _speculate_two_tokens(Lp, Lq, cfg, gen)
    stat, dof = chi2_stat(counts, joint)
    assert stat < chi2_critical(dof), f"chi2={stat:.1f} dof={dof}"
    # Sanity: the test really exercised acceptances and rejections.
    assert 0 < (n == 0).float().mean() < 1 and (n == 2).any()


@pytest.mark.parametrize("cfg", CFGS[:2], ids=["T1", "T0.7-topk5"])
def test_deterministic_drafter_point_mass_q_is_lossless(cfg):
    """q = None (a drafter that reports no distribution) is exact for any way of choosing tokens."""
    Lp, Lq = _tables(2, "far")
    gen = torch.Generator().manual_seed(7)
    counts, joint, _ = _speculate_two_tokens(Lp, Lq, cfg, gen, with_q=False)
    stat, dof = chi2_stat(counts, joint)
    assert stat < chi2_critical(dof), f"chi2={stat:.1f} dof={dof}"


def test_honest_sampler_passes_same_check():
    """The reference: plain sampling of the same size passes with the same threshold."""
    Lp, _ = _tables(1, "far")
    cfg = SamplingConfig(temperature=1.0)
    P = logits_to_probs(Lp, cfg)
    gen = torch.Generator().manual_seed(5)
    y1 = torch.multinomial(P[torch.zeros(N, dtype=torch.long)], 1, generator=gen).squeeze(-1)
    y2 = torch.multinomial(P[y1], 1, generator=gen).squeeze(-1)
    counts = torch.zeros(V, V)
    counts.index_put_((y1, y2), torch.ones(N), accumulate=True)
    stat, dof = chi2_stat(counts, P[0][:, None] * P)
    assert stat < chi2_critical(dof)


@pytest.mark.parametrize("bug", ["skip_residual", "mismatched_q"])
def test_planted_bug_is_caught(monkeypatch, bug):
    """The same check fails when the rule is broken: resampling from p instead of
    norm(max(0, p - q)) after a rejection, or reporting a q other than the one the drafts were
    sampled from (here: drafted at T=0.5, reported at T=1, a bug several engines shipped)."""
    Lp, Lq = _tables(1, "far")
    cfg = SamplingConfig(temperature=1.0)
    gen = torch.Generator().manual_seed(123)
    if bug == "skip_residual":
        monkeypatch.setattr(S, "residual_distribution", lambda p, q: p)
        counts, joint, _ = _speculate_two_tokens(Lp, Lq, cfg, gen)
    else:
        counts, joint, _ = _speculate_two_tokens(Lp, Lq, cfg, gen, draft_temperature=0.5)
    stat, dof = chi2_stat(counts, joint)
    assert stat > 5 * chi2_critical(dof), f"planted bug not detected: chi2={stat:.1f}"


def test_greedy_rule_is_the_sampling_rule_with_one_hot_p():
    """T=0 takes a fast path; it must equal the general rule applied to near-one-hot p."""
    g = torch.Generator().manual_seed(0)
    B, K, Vb = 500, 5, 50
    logits = torch.randn(B, K + 1, Vb, generator=g) * 3
    argmax = logits.argmax(-1)
    # Drafts agree with the argmax for a random prefix, then differ.
    drafts = argmax[:, :K].clone()
    cut = torch.randint(0, K + 1, (B,), generator=g)
    wrong = torch.arange(K)[None, :] >= cut[:, None]
    drafts[wrong] = (drafts[wrong] + 1) % Vb
    lengths = torch.randint(0, K + 1, (B,), generator=g)
    n_greedy, next_greedy = verify_chain(logits, drafts, lengths, SamplingConfig())
    n_samp, next_samp = verify_chain(logits, drafts, lengths, SamplingConfig(temperature=1e-4), generator=g)
    assert torch.equal(n_greedy, torch.minimum(cut, lengths))
    assert torch.equal(n_greedy, n_samp) and torch.equal(next_greedy, next_samp)
    assert torch.equal(next_greedy, argmax[torch.arange(B), n_greedy])


def test_logits_to_probs_shaping():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]])
    p = logits_to_probs(logits, SamplingConfig(temperature=1.0, top_k=2))
    assert torch.allclose(p[0, 2:], torch.zeros(3)) and torch.isclose(p.sum(), torch.tensor(1.0))
    full = logits.softmax(-1)[0]
    p = logits_to_probs(logits, SamplingConfig(temperature=1.0, top_p=float(full[0] + 1e-3)))
    assert (p[0] > 0).sum() == 2  # first token alone has mass < top_p, so the second is kept
    p = logits_to_probs(logits, SamplingConfig(temperature=1.0, top_p=float(full[0] - 1e-3)))
    assert (p[0] > 0).sum() == 1
    assert torch.equal(logits_to_probs(logits, SamplingConfig()), torch.tensor([[1.0, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1)
