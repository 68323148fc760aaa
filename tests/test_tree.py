"""Token trees: mask/position construction against brute-force per-path forwards, tree greedy ==
plain greedy (random, oracle and prompt-lookup trees; batches; Gemma3 past its sliding window),
lossless multi-draft tree sampling with a planted bug, and the static tree search."""
import itertools
import math

import pytest
import torch

import mtp.tree as T
from mtp.drafters import PromptLookupDrafter, StaticTreeTestDrafter
from mtp.engine import generate
from mtp.heads import HEAD_FAMILIES, list_families
from mtp.kv import KVState
from mtp.sampling import SamplingConfig, logits_to_probs
from mtp.tree import StaticTree, ancestor_matrix, best_static_tree, node_depths, verify_tree
from stat_utils import chi2_critical, chi2_stat

TREE = StaticTree([(0,), (1,), (2,), (0, 0), (0, 1), (1, 0), (0, 0, 0), (0, 0, 1), (0, 0, 0, 0)])
PROMPTS = [[5, 17, 42, 9, 77, 3], [4, 8, 15, 16, 23, 42, 4, 8, 15, 16], [99, 98, 97]]


def test_static_tree_layout():
    t = StaticTree([(0, 0), (0,), (1,), (0, 1)])
    assert t.choices == [(0,), (1,), (0, 0), (0, 1)]
    assert t.parents == [-1, -1, 0, 0] and t.depths == [1, 1, 2, 2] and t.depth == 2
    with pytest.raises(ValueError, match="no parent"):
        StaticTree([(0, 1)])
    anc = ancestor_matrix(torch.tensor([t.parents]))[0]
    # input 0 = root; node 2 (choice (0,0)) = input 3 sees root, node 0 (input 1) and itself
    assert anc[3].tolist() == [True, True, False, True, False]
    assert node_depths(torch.tensor([t.parents])).tolist() == [[1, 1, 2, 2]]


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])
def test_tree_forward_equals_per_path_forward(fixture, request):
    """Each node's logits from one tree forward equal a plain forward over context + its path."""
    model, _ = request.getfixturevalue(fixture)
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ctx = torch.randint(3, V, (1, 40), generator=g)  # longer than tiny-gemma3's window (16)
    tokens = torch.randint(3, V, (1, TREE.size), generator=g)
    parents = torch.tensor([TREE.parents])
    pending = torch.tensor([[7]])
    with torch.no_grad():
        kv = KVState(model, 1, torch.device("cpu"))
        kv.forward(ctx)
        kv.truncate(kv.lengths)  # crop(0): sliding layers trimmed as in the engine
        out = kv.forward_tree(torch.cat([pending, tokens], 1), parents, torch.tensor([TREE.size]))
        for i in range(TREE.size):
            path, j = [], i
            while j >= 0:
                path.append(int(tokens[0, j]))
                j = TREE.parents[j]
            seq = torch.cat([ctx, pending, torch.tensor([path[::-1]])], 1)
            ref = model(seq).logits[0, -1]
            torch.testing.assert_close(out.logits[0, i + 1], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])
def test_tree_greedy_equals_plain(fixture, request):
    model, _ = request.getfixturevalue(fixture)
    V = model.config.vocab_size
    n = 40  # past tiny-gemma3's window (16)
    for p in PROMPTS:
        ref = generate(model, p, max_new_tokens=n, ignore_eos=True).tokens[0]
        for d in (StaticTreeTestDrafter(TREE, V, seed=1), StaticTreeTestDrafter(TREE, V, [ref], seed=2),
                  PromptLookupDrafter(5, branches=3)):
            out = generate(model, p, drafter=d, max_new_tokens=n, ignore_eos=True)
            assert out.tokens[0] == ref, type(d).__name__
            assert out.stats.new_tokens == out.stats.accepted + out.stats.target_tokens
        # The oracle path (rank 0 at every depth) is always accepted: depth 4 + bonus per forward.
        assert out.stats.new_tokens == n


def test_oracle_tree_accepts_full_depth(tiny_llama):
    model, _ = tiny_llama
    ref = generate(model, PROMPTS[0], max_new_tokens=41, ignore_eos=True).tokens[0]
    out = generate(model, PROMPTS[0], drafter=StaticTreeTestDrafter(TREE, model.config.vocab_size, [ref]),
                   max_new_tokens=41, ignore_eos=True)
    assert out.tokens[0] == ref
    assert out.stats.accept_lengths == [4] * 8  # 1 + 8 * 5 = 41 tokens in 9 forwards
    assert out.stats.per_position_acceptance() == [1.0] * 4
    # each decode forward is timed as a tree forward over its nodes (the cost model's in-run curve)
    assert [c[:2] for c in out.stats.step_costs] == [[TREE.size, 1]] * 8


def test_batched_tree_equals_rows_alone(tiny_llama):
    model, _ = tiny_llama
    V = model.config.vocab_size
    refs = [generate(model, p, max_new_tokens=30, ignore_eos=True).tokens[0] for p in PROMPTS]
    for d in (StaticTreeTestDrafter(TREE, V, refs, seed=3), StaticTreeTestDrafter(TREE, V, seed=4),
              PromptLookupDrafter(4, branches=2)):
        assert generate(model, PROMPTS, drafter=d, max_new_tokens=30, ignore_eos=True).tokens == refs


# --- lossless tree sampling (unit level, 30k vectorised trials) ---------------------------------
V = 6
N = 30_000


def _tree_trials(iid: bool, bug: bool = False, seed: int = 0):
    """Root with 3 children (siblings), the first child with 2 children. Target p is a fixed
    bigram table; returns counts of the first two emitted tokens and the exact joint."""
    g = torch.Generator().manual_seed(seed)
    Lp = torch.randn(V, V, generator=g) * 1.5
    Lq = torch.randn(V, V, generator=g)
    cfg = SamplingConfig(temperature=1.0)
    P, Q = logits_to_probs(Lp, cfg), logits_to_probs(Lq, cfg)
    x0 = 0
    parents = torch.tensor([[-1, -1, -1, 0, 0]]).expand(N, 5)
    tokens = torch.zeros(N, 5, dtype=torch.long)
    if iid:  # siblings i.i.d. from q
        tokens[:, :3] = torch.multinomial(Q[x0].expand(N, V), 3, replacement=True, generator=g)
        tokens[:, 3:] = torch.multinomial(Q[tokens[:, 0]], 2, replacement=True, generator=g)
        probs = torch.stack([Q[x0].expand(N, V)] * 3 + [Q[tokens[:, 0]]] * 2, 1)
    else:  # deterministic distinct siblings: top-3 / top-2 of q
        tokens[:, :3] = Q[x0].topk(3).indices
        tokens[:, 3:] = Q[tokens[:, 0]].topk(2, -1).indices
        probs = None
    logits = torch.stack([Lp[x0].expand(N, V)] + [Lp[tokens[:, i]] for i in range(5)], 1)
    saved = T.residual_distribution
    if bug:
        T.residual_distribution = lambda p, q: p
    try:
        paths, nxt = verify_tree(logits, tokens, parents, torch.full((N,), 5), cfg, probs, g)
    finally:
        T.residual_distribution = saved
    emitted = []
    for r, path in enumerate(paths):
        toks = [int(tokens[r, i]) for i in path] + [int(nxt[r])]
        if len(toks) < 2:
            toks.append(int(torch.multinomial(P[toks[0]], 1, generator=g)))
        emitted.append(toks[:2])
    e = torch.tensor(emitted)
    counts = torch.zeros(V, V)
    counts.index_put_((e[:, 0], e[:, 1]), torch.ones(N), accumulate=True)
    return counts, P[x0][:, None] * P, paths


@pytest.mark.parametrize("iid", [True, False], ids=["iid-siblings", "distinct-siblings"])
def test_tree_sampling_is_lossless(iid):
    counts, joint, paths = _tree_trials(iid)
    stat, dof = chi2_stat(counts, joint)
    assert stat < chi2_critical(dof), f"chi2={stat:.1f} dof={dof}"
    firsts = [p[0] for p in paths if p]
    assert {0, 1, 2} <= set(firsts), "every sibling should be accepted sometimes"


def test_tree_sampling_planted_bug_fails():
    counts, joint, _ = _tree_trials(iid=True, bug=True)
    stat, dof = chi2_stat(counts, joint)
    assert stat > 5 * chi2_critical(dof), f"planted bug not detected: chi2={stat:.1f}"


# --- static tree search -------------------------------------------------------------------------
def test_best_static_tree_is_optimal_by_brute_force():
    acc = [[0.6, 0.2, 0.1], [0.5, 0.2], [0.4]]
    all_nodes = [c for d in range(1, 4) for c in itertools.product(*[range(len(acc[i])) for i in range(d)])]
    for budget in (1, 3, 5):
        best = best_static_tree(acc, budget)
        assert best.size == budget
        brute = 0.0
        for subset in itertools.combinations(all_nodes, budget):
            s = set(subset)
            if all(len(c) == 1 or c[:-1] in s for c in subset):
                brute = max(brute, StaticTree(list(subset)).expected_accept_length(acc))
        assert best.expected_accept_length(acc) == pytest.approx(brute)
    assert best_static_tree(acc, 3).choices == [(0,), (1,), (0, 0)]
    assert StaticTree.chain(3).expected_accept_length(acc) == pytest.approx(1 + 0.6 + 0.3 + 0.12)


# --- dynamic trees (EAGLE-2 style) ---------------------------------------------------------------
def test_build_dynamic_tree_keeps_best_nodes():
    """With a fixed next-token distribution, the kept nodes are the best by cumulative log-prob."""
    from mtp.tree import DynamicTreeConfig, build_dynamic_tree

    logp = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    tokens, parents = build_dynamic_tree(lambda t, p, nodes: logp.expand(len(nodes), 4), DynamicTreeConfig(5, 3, 2))
    # depth 1: 0 (.5), 1 (.3); depth 2 frontier best 2: 0->0 (.25), 0->1 (.15) [1->0 = .15 ties, later];
    # depth 3 from 0->0: 0->0->0 (.125), 0->0->1 (.075); the best 5 of all 6 nodes drop 0->0->1.
    assert (tokens, parents) == ([0, 1, 0, 1, 0], [-1, -1, 0, 0, 2])

    def path(i):
        return path(parents[i]) + (tokens[i],) if i >= 0 else ()

    kept = [path(i) for i in range(len(tokens))]
    assert kept == [(0,), (1,), (0, 0), (0, 1), (0, 0, 0)]
    assert all(p < i for i, p in enumerate(parents))  # a valid tree: parents come first
    # kept in topological order and by likelihood: a path never follows a less likely one of its depth
    probs = [0.5, 0.3, 0.15, 0.05]
    p_of = [float(torch.tensor([probs[t] for t in k]).prod()) for k in kept]
    assert all(p_of[i] >= p_of[j] for i in range(5) for j in range(i, 5) if len(kept[i]) == len(kept[j]))
    scores = []  # asked for: each kept node's cumulative log-prob, the same tree
    assert build_dynamic_tree(lambda t, p, nodes: logp.expand(len(nodes), 4), DynamicTreeConfig(5, 3, 2),
                              scores_out=scores) == (tokens, parents)
    assert scores == pytest.approx([math.log(x) for x in p_of], abs=1e-6)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])
def test_dynamic_tree_draft_model_greedy_equals_plain(fixture, request):
    from conftest import perturbed_copy
    from mtp.drafters import DraftModelDrafter
    from mtp.tree import DynamicTreeConfig

    model, _ = request.getfixturevalue(fixture)
    dm = perturbed_copy(model, 0.05, seed=1)
    refs = [generate(model, p, max_new_tokens=36, ignore_eos=True).tokens[0] for p in PROMPTS]
    for p, ref in zip(PROMPTS, refs):
        out = generate(model, p, drafter=DraftModelDrafter(dm, tree=DynamicTreeConfig(12, 4, 3)), max_new_tokens=36,
                       ignore_eos=True)
        assert out.tokens[0] == ref
        assert out.stats.accepted > 0
    if fixture == "tiny_llama":
        out = generate(model, PROMPTS, drafter=DraftModelDrafter(dm, tree=DynamicTreeConfig(12, 4, 3)),
                       max_new_tokens=36, ignore_eos=True)
        assert out.tokens == refs


# --- every head family drafts trees ---------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_heads(tiny_llama):
    """Each family, briefly trained on the tiny target's own greedy continuation."""
    from mtp.heads import build_head

    model, _ = tiny_llama
    seq = torch.tensor([PROMPTS[0] + generate(model, PROMPTS[0], max_new_tokens=100, ignore_eos=True).tokens[0]])
    with torch.no_grad():
        hs = model(seq, output_hidden_states=True).hidden_states
    heads = {}
    torch.manual_seed(0)
    for fam in list_families():
        h = build_head(fam, model, num_heads=3)
        opt = torch.optim.Adam(h.parameters(), 3e-3)
        for _ in range(40):
            out = h.forward_train({layer: hs[layer] for layer in h.config.hidden_layers}, seq)
            loss = sum(torch.nn.functional.cross_entropy(lg[0, : seq.shape[1] - 2 - j], seq[0, 2 + j:])
                       for j, lg in enumerate(out.logits))
            opt.zero_grad()
            loss.backward()
            opt.step()
        heads[fam] = h.eval()
    return heads


@pytest.mark.parametrize("family", list_families())
def test_every_head_drafts_lossless_trees(tiny_llama, trained_heads, family):
    from mtp.tree import DynamicTreeConfig

    model, _ = tiny_llama
    head = trained_heads[family]
    prompts = PROMPTS[:2]
    refs = [generate(model, p, max_new_tokens=24, ignore_eos=True).tokens[0] for p in prompts]
    static = StaticTree([(0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0)])
    for tree in (static, DynamicTreeConfig(10, 3, 3)):
        out = generate(model, prompts, drafter=head.as_drafter(tree=tree), max_new_tokens=24, ignore_eos=True)
        assert out.tokens == refs, f"{family} {type(tree).__name__}"
        assert out.stats.accepted > 0
        # The sampling path of tree verification: with top_k=1 the target's distribution is one-hot,
        # so a lossless sampler must reproduce greedy decoding token for token.
        sampled = generate(model, prompts, drafter=head.as_drafter(tree=tree), max_new_tokens=24, temperature=1.0,
                           top_k=1, seed=0, ignore_eos=True)
        assert sampled.tokens == refs, f"{family} {type(tree).__name__} sampled"
        assert sampled.stats.accepted > 0


# families whose trees grow one head call per depth over the whole frontier (EAGLE, EAGLE-3,
# Hydra, DeepSeek MTP; Medusa and parallel heads, whose logits depend only on the depth)
@pytest.mark.parametrize("family", [f for f in list_families() if hasattr(HEAD_FAMILIES[f], "tree_expander")])
def test_batched_frontier_expansion_equals_per_path_chains(tiny_llama, trained_heads, family):
    """The one-call-per-depth tree expansion gives, for every node, the logits the family's own
    chain gives after that node's path (paths of mixed lengths in one call too); batch-1 trees
    then equal plain greedy."""
    from mtp.heads.drafting import HeadDrafter

    model, _ = tiny_llama
    head = trained_heads[family]
    d = HeadDrafter(head)
    generate(model, PROMPTS[1], drafter=d, max_new_tokens=9, ignore_eos=True)  # leaves a live draft state
    kvs = d._state.get("kv")
    kvs = [] if kvs is None else kvs if isinstance(kvs, list) else [kvs]  # DeepSeek: one cache per module
    lengths = [kv.lengths.clone() for kv in kvs]
    expand = head.tree_expander(d._state, d._seqs)
    levels = [[()], [(5,), (9,), (17,)], [(5, 3), (5, 40), (9, 3)], [(5, 3, 8)]]
    if head.max_draft_tokens is not None:  # parallel families draft at most num_heads tokens
        levels = [lv for lv in levels if len(lv[0]) < head.max_draft_tokens]
    if family in ("hydra", "deepseek"):
        levels.append([(7, 2), (), (11,)])
    with torch.no_grad():
        got = [expand(level) for level in levels]
        expand.close()
        # speculative slots dropped (DeepSeek: modules 1.. kept the committed positions fed with their tree)
        counts = d._state.get("count")
        if counts is not None:
            assert all(n1 >= n0 for kv, n in zip(kvs, lengths) for n1, n0 in zip(kv.lengths.tolist(), n.tolist()))
            lengths = [torch.tensor(c) for c in counts]
        assert all(torch.equal(kv.lengths.cpu(), n.cpu()) for kv, n in zip(kvs, lengths))
        for level, logits in zip(levels, got):
            for path, row in zip(level, logits):
                torch.testing.assert_close(row, d._next_logits([list(path)])[0], rtol=1e-4, atol=1e-4)
    refs = generate(model, PROMPTS[0], max_new_tokens=24, ignore_eos=True).tokens
    from mtp.tree import DynamicTreeConfig

    for tree in (StaticTree([(0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0)]), DynamicTreeConfig(10, 3, 3)):
        out = generate(model, PROMPTS[0], drafter=head.as_drafter(tree=tree), max_new_tokens=24, ignore_eos=True)
        assert out.tokens == refs and out.stats.accepted > 0


@pytest.mark.parametrize("family", ["hydra", "eagle3", "medusa"])
def test_reduced_vocab_drafts_are_target_ids(tiny_llama, family):
    """A head with a draft vocabulary picks over its Vd logits and drafts target ids: a chain's first
    draft is d2t[argmax], a tree's root children are its top candidates mapped the same way, every
    drafted token is in the draft vocabulary (here the 32 highest ids, so an unmapped index would
    show), and greedy decoding with either equals plain decoding."""
    from mtp.drafters.base import DraftContext
    from mtp.heads import build_head
    from mtp.tree import DynamicTreeConfig

    model, _ = tiny_llama
    V = model.config.vocab_size
    torch.manual_seed(0)
    head = build_head(family, model, num_heads=2, draft_vocab_size=32, token_counts=torch.arange(V).float()).eval()
    d2t = head.draft_vocab.tolist()
    assert d2t == list(range(V - 32, V))
    ref = generate(model, PROMPTS[0], max_new_tokens=16, ignore_eos=True).tokens
    for tree in (None, DynamicTreeConfig(8, 2, 3)):
        d = head.as_drafter(tree=tree)
        assert generate(model, PROMPTS[0], drafter=d, max_new_tokens=16, ignore_eos=True).tokens == ref
        ctx = DraftContext(sequences=[list(s) for s in d._seqs], max_tokens=2, sampling=SamplingConfig(),
                           generator=None, active=[True], device=torch.device("cpu"))
        with torch.no_grad():
            draft = d.propose(ctx)
            first = d._next_logits([[]])[0]
        assert first.shape == (32,)
        toks = draft.tokens[0, : int(draft.lengths[0])].tolist()
        assert toks and set(toks) <= set(d2t)
        if tree is None:
            assert toks[0] == d2t[int(first.argmax())]
        else:
            roots = {t for t, p in zip(toks, draft.parents[0].tolist()) if p == -1}
            assert roots <= {d2t[i] for i in first.topk(3).indices.tolist()} and roots



def test_sample_static_tree_draws_siblings_from_their_parents_q():
    """sample_static_tree: the shape is the static tree's; each node's reported q is the distribution
    after its parent's path (shared by siblings), shaped by the sampling config; every drawn token has
    q > 0; over many draws a root child's token frequencies follow q; greedy configs are refused."""
    from mtp.tree import StaticTree, sample_static_tree

    V = 6
    base = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -9.0])

    def next_logits(paths):
        return torch.stack([base.roll(len(p)) for p in paths])

    tree = StaticTree([(0,), (1,), (0, 0), (0, 1), (1, 0)])
    cfg = SamplingConfig(temperature=1.0, top_k=4)
    g = torch.Generator().manual_seed(0)
    firsts = torch.zeros(V)
    for _ in range(3000):
        toks, pars, q = sample_static_tree(tree, next_logits, cfg, g)
        assert pars == tree.parents and q.shape == (tree.size, V)
        assert torch.equal(q[0], q[1]) and torch.equal(q[2], q[3])
        assert all(q[i, t] > 0 for i, t in enumerate(toks))
        firsts[toks[0]] += 1
    want = logits_to_probs(base, cfg)
    assert torch.allclose(firsts / firsts.sum(), want, atol=0.03) and firsts[4:].sum() == 0
    d2t = torch.tensor([1, 3, 4, 7, 8, 9])  # a draft vocabulary: columns -> target ids 0..9
    toks, _, q = sample_static_tree(tree, next_logits, cfg, g, to_target=lambda q: q.new_zeros(10).index_copy(0, d2t, q))
    assert q.shape == (tree.size, 10) and set(toks) <= set(d2t.tolist()) and q[:, [0, 2, 5, 6]].sum() == 0
    with pytest.raises(ValueError, match="greedy"):
        sample_static_tree(tree, next_logits, SamplingConfig())
