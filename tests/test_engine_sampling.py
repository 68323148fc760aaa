"""End-to-end losslessness of sampling through the engine: 20k seeded rows decoded as one batch.
The first token comes from prefill; the next two from one speculative step (k=2). Given the first
token's most likely value, the empirical joint distribution of the next two must match the target's
exact distribution (computed by brute force), for drafters whose q is close to and far from p; a planted
bug (no residual resampling) must fail the same check."""
import pytest
import torch

import mtp.sampling as S
from conftest import perturbed_copy
from mtp.drafters import DraftModelDrafter, RandomDrafter
from mtp.engine import generate
from mtp.sampling import SamplingConfig, logits_to_probs
from stat_utils import chi2_critical, chi2_stat

N = 30_000
CFG = SamplingConfig(temperature=1.0, top_k=4)
PROMPT = [5, 17, 42, 9, 77, 3]


@pytest.fixture(scope="module")
def exact_joint(tiny_llama):
    model, _ = tiny_llama
    V = model.config.vocab_size
    with torch.no_grad():
        y0 = int(model(torch.tensor([PROMPT])).logits[0, -1].argmax())
        prefix = PROMPT + [y0]
        p1 = logits_to_probs(model(torch.tensor([prefix])).logits[0, -1], CFG)
        support = p1.nonzero().flatten()
        joint = torch.zeros(V, V)
        seqs = torch.tensor([prefix + [int(y)] for y in support])
        p2 = logits_to_probs(model(seqs).logits[:, -1], CFG)
        joint[support] = p1[support, None] * p2
    return y0, joint


def _empirical(model, drafter, y0, k=2, seed=0, n=N):
    out = generate(model, [PROMPT] * n, drafter=drafter, num_draft_tokens=k, max_new_tokens=4,
                   temperature=CFG.temperature, top_k=CFG.top_k, seed=seed, ignore_eos=True)
    V = model.config.vocab_size
    toks = torch.tensor(out.tokens)
    toks = toks[toks[:, 0] == y0]
    assert len(toks) > n // 5
    counts = torch.zeros(V, V)
    counts.index_put_((toks[:, 1], toks[:, 2]), torch.ones(len(toks)), accumulate=True)
    return counts, out.stats


def _draft(kind, model):
    V = model.config.vocab_size
    if kind == "plain":
        return None
    if kind == "random-uniform-q":
        return RandomDrafter(V, 2, seed=1, report_probs=True)
    if kind == "draft-close":
        return DraftModelDrafter(perturbed_copy(model, 0.05, seed=1), 2)
    if kind == "draft-mid":
        return DraftModelDrafter(perturbed_copy(model, 0.1, seed=1), 2)
    if kind == "draft-far":
        return DraftModelDrafter(perturbed_copy(model, 0.5, seed=1), 2)
    if kind.endswith("-reduced-vocab"):  # q is 0 outside a 48-token draft vocabulary (EAGLE-3's own LM head;
        from mtp.heads import build_head  # FR-Spec rows of the shared LM head for DeepSeek MTP and Medusa)

        torch.manual_seed(0)
        counts = torch.arange(V, 0, -1).float()
        family = kind[: -len("-reduced-vocab")]
        return build_head(family, model, num_heads=2, draft_vocab_size=48, token_counts=counts).as_drafter()
    if kind.startswith("hydra-dt"):  # a head's chain of argmax drafts (dt0: point masses at T > 0) or drafts
        from mtp.heads import build_head  # sampled at the head's own temperature (q sharper than the target's)

        torch.manual_seed(0)
        return build_head("hydra", model, num_heads=2).as_drafter(draft_temperature=float(kind[len("hydra-dt"):]))
    if kind in ("lookup-first-mixed", "union-mixed", "adapt-mixed", "adapt-tree-mixed", "adapt-tree-mixed-dt0"):
        # Per row and step a coin picks a deterministic "lookup" chain (the target's own greedy
        # continuation, so it is often accepted) or the draft model's sampled chain.
        # The union grafts that chain beside the draft model's sampled one (two proposals, two q's).
        # The adaptive union verifies per row the union, lookup alone or the draft model alone; here a
        # second coin makes that choice (rows live too few steps for its estimates to settle), which
        # mixes all three shapes in every batch.
        from mtp.drafters import AdaptiveUnionDrafter, LookupFirstDrafter, LookupUnionDrafter

        greedy: dict[tuple, list[int]] = {}
        base = {"lookup-first-mixed": LookupFirstDrafter, "union-mixed": LookupUnionDrafter,
                "adapt-mixed": AdaptiveUnionDrafter, "adapt-tree-mixed": AdaptiveUnionDrafter,
                "adapt-tree-mixed-dt0": AdaptiveUnionDrafter}[kind]

        class CoinLookup(base):
            gen = torch.Generator().manual_seed(3)

            def _lookup(self, seq, n):
                if torch.rand(1, generator=self.gen).item() < 0.5:
                    return []
                if tuple(seq) not in greedy:
                    greedy[tuple(seq)] = generate(model, seq, max_new_tokens=2, ignore_eos=True).tokens[0]
                return greedy[tuple(seq)][:n]

            def _match(self, seq, n):
                return self._lookup(seq, n), 2

            def choose(self, est, chain_len):
                modes = self.modes if chain_len else tuple(m for m in self.modes if m in ("heads", "chain", "plain"))
                return modes[int(torch.randint(len(modes), (1,), generator=self.gen))]

        dm = DraftModelDrafter(perturbed_copy(model, 0.1, seed=1), 2)
        if kind == "adapt-mixed":
            return CoinLookup(dm, lambda m: float(m), lookup_tokens=2)
        if kind.startswith("adapt-tree-mixed"):
            # A fallback that also offers a chain ("chain", as a head drafting trees does:
            # HeadDrafter.propose_chain), here the draft model's: sampled with its q as the union asks
            # (sampled=True), or, as a head with draft_temperature 0 (:dt0) does, its argmax, a point
            # mass. Rows with point-mass lookup chains, sampled fallback drafts and chain rows in one
            # batch. (A real head's tree drafts row by row: too slow for this many rows; see
            # test_sampled_head_chain_in_the_adaptive_union_is_lossless and test_engine.)
            from dataclasses import replace

            class WithChain(DraftModelDrafter):
                offers_chain = True

                def propose_chain(self, ctx, sampled=False):
                    sampled = sampled and kind == "adapt-tree-mixed"
                    return self.propose(ctx if sampled else replace(ctx, sampling=SamplingConfig()))

            return CoinLookup(WithChain(perturbed_copy(model, 0.1, seed=1), 2), lambda m: float(m), lookup_tokens=2,
                              chain_tokens=2)
        return CoinLookup(dm, lookup_tokens=2)
    raise KeyError(kind)


@pytest.mark.parametrize("kind", ["plain", "random-uniform-q", "draft-close", "draft-far", "eagle3-reduced-vocab",
                                  "deepseek-reduced-vocab", "medusa-reduced-vocab", "hydra-dt0", "hydra-dt0.5",
                                  "lookup-first-mixed",
                                  "union-mixed", "adapt-mixed", "adapt-tree-mixed", "adapt-tree-mixed-dt0"])
def test_engine_sampling_is_lossless(tiny_llama, exact_joint, kind):
    model, _ = tiny_llama
    y0, joint = exact_joint
    drafter = _draft(kind, model)
    counts, stats = _empirical(model, drafter, y0)
    stat, dof = chi2_stat(counts, joint)
    assert stat < chi2_critical(dof), f"{kind}: chi2={stat:.1f} dof={dof}"
    print(kind, f"chi2={stat:.1f} crit={chi2_critical(dof):.1f} dof={dof}", stats)
    if kind == "draft-close":
        assert stats.draft_acceptance_rate > 0.5
    if kind == "draft-far":
        assert stats.draft_acceptance_rate < 0.05
    if kind.startswith("adapt-"):
        assert min(drafter.mode_steps.values()) > 0, drafter.mode_steps
        assert ("chain" in drafter.mode_steps) == kind.startswith("adapt-tree-mixed")


def test_same_model_as_draft_accepts_everything(tiny_llama):
    """vLLM's end-to-end check: target == draft gives acceptance >= 0.98 (here exactly 1), greedy and sampled."""
    model, _ = tiny_llama
    import copy
    for T in (0.0, 1.0):
        out = generate(model, [PROMPT] * 8, drafter=DraftModelDrafter(copy.deepcopy(model), 3), max_new_tokens=21,
                       temperature=T, seed=0, ignore_eos=True)
        assert out.stats.draft_acceptance_rate >= 0.98
        # prefill + 5 full steps of k+1 = 4 tokens: 21 tokens in 6 forwards per row
        assert out.stats.tau >= 0.98 * 21 / 6


def test_engine_planted_bug_fails(tiny_llama, exact_joint, monkeypatch):
    model, _ = tiny_llama
    monkeypatch.setattr(S, "residual_distribution", lambda p, q: p)
    y0, joint = exact_joint
    # A draft whose q overlaps p but differs: rejections are frequent and the residual matters.
    counts, _ = _empirical(model, _draft("draft-mid", model), y0)
    stat, dof = chi2_stat(counts, joint)
    assert stat > 3 * chi2_critical(dof), f"planted bug not detected: chi2={stat:.1f}"


def test_sampled_head_tree_is_lossless(tiny_llama, exact_joint):
    """A head's static tree whose nodes are sampled (siblings i.i.d. from the head's q after their
    path: HeadDrafter(sample_tree=True)), through the engine: the joint of the next two tokens is the
    target's. Fewer rows than above (trees are built row by row), so a looser but still failing check."""
    from mtp.heads import build_head
    from mtp.tree import StaticTree

    model, _ = tiny_llama
    y0, joint = exact_joint
    torch.manual_seed(0)
    head = build_head("hydra", model, num_heads=2)
    drafter = head.as_drafter(tree=StaticTree([(0,), (1,), (2,), (0, 0), (1, 0)]), sample_tree=True)
    counts, stats = _empirical(model, drafter, y0, n=4000)
    stat, dof = chi2_stat(counts, joint)
    assert stat < chi2_critical(dof), f"chi2={stat:.1f} dof={dof}"
    assert sum(stats.accept_lengths) > 0.02 * len(stats.accept_lengths)  # its nodes are accepted: the check exercises them


def test_sampled_head_chain_in_the_adaptive_union_is_lossless(tiny_llama, exact_joint):
    """adapt+heads:...:tree<N>:chain<N> at T > 0: the union's chain choice samples the head's chain
    (reduced draft vocabulary) and verifies it against its q. Through the engine the joint of the
    next two tokens is the target's, and the drafts carry that q: spread over the draft vocabulary's
    target ids, not point masses, beside rows whose lookup chain (the target's greedy continuation)
    is a point mass; a point mass on the wrong token fails the chi-square here (chi2 ~1400 against a
    critical ~30). An untrained head's q barely overlaps the target's p, so a q put on the wrong
    draft would pass it; "adapt-tree-mixed" above, with a draft model close to the target as the
    chain, fails it (chi2 ~1800)."""
    from mtp.drafters import AdaptiveUnionDrafter
    from mtp.heads import build_head
    from mtp.tree import StaticTree

    model, _ = tiny_llama
    y0, joint = exact_joint
    V = model.config.vocab_size
    torch.manual_seed(0)
    head = build_head("hydra", model, num_heads=2, draft_vocab_size=48, token_counts=torch.arange(V, 0, -1).float())
    drafts, greedy = [], {}

    class ChainOrPlain(AdaptiveUnionDrafter):  # the tree drafts row by row: leave it out here
        gen = torch.Generator().manual_seed(5)

        def _match(self, seq, n):  # "lookup": the target's greedy continuation, point masses often accepted
            if tuple(seq) not in greedy:
                greedy[tuple(seq)] = generate(model, seq, max_new_tokens=2, ignore_eos=True).tokens[0]
            return greedy[tuple(seq)][:n], 2

        def choose(self, est, chain_len):
            u = torch.rand(1, generator=self.gen).item()
            return "chain" if u < 0.6 else "lookup" if u < 0.8 and chain_len else "plain"

        def propose(self, ctx):
            d = super().propose(ctx)
            drafts.append((d, torch.tensor([row.mode == "chain" for row in self._rows])))
            return d

    # the union's chain drafts at the head drafter's draft_temperature (:dt0.3: its top-4 at temperature 0.3)
    drafter = ChainOrPlain(head.as_drafter(tree=StaticTree([(0,), (1,), (0, 0)]), draft_temperature=0.3),
                           lambda m: float(m), chain_tokens=2)
    counts, stats = _empirical(model, drafter, y0, n=N)
    stat, dof = chi2_stat(counts, joint)
    assert stat < chi2_critical(dof), f"chi2={stat:.1f} dof={dof}"
    assert min(drafter.mode_steps[m] for m in ("chain", "lookup", "plain")) > 0, drafter.mode_steps
    assert sum(stats.accept_lengths) > 0.02 * len(stats.accept_lengths)  # its drafts are accepted
    d, rows = next((d, c) for d, c in drafts if d.probs is not None and c.any() and (~c & (d.lengths > 0)).any())
    assert (d.lengths[rows] == 2).all()
    q = d.probs[rows][:, :2]
    assert torch.allclose(q.sum(-1), torch.ones(q.shape[:2]), atol=1e-4)
    assert q.max(-1).values.min() < 0.99  # sampled from q, not point masses
    assert (q[..., [t for t in range(V) if t not in set(head.draft_vocab.tolist())]] == 0).all()
    others = d.probs[~rows][:, :2]  # lookup rows: point masses on their drafts; plain rows: nothing
    assert ((others == 0) | (others == 1)).all() and (others.sum(-1) <= 1).all()
    assert (others.sum((-1, -2)) == d.lengths[~rows]).all()
    taken = q.gather(-1, d.tokens[rows][:, :2].unsqueeze(-1))
    assert (taken > 0).all()  # each draft lies in the support of its q
