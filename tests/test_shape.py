"""Draft length from the cost model: the choice follows the costs, and :auto runs end to end."""
import json

import pytest
import torch

from mtp.shape import choose_chain_length, heldout_acceptance, heldout_sampled_temperature, predicted_speedup


def test_choice_follows_acceptance_and_costs():
    a = [0.8, 0.6, 0.4, 0.2]
    flat = lambda m: 1.0  # noqa: E731  verification as cheap at any width (a small batch on a GPU)
    free = lambda k: 0.0  # noqa: E731
    k, table = choose_chain_length(a, flat, free)
    assert k == 4 and table[0] == 1.0 and table[4] == pytest.approx(1 + sum(a))
    # verification cost linear in width (a large batch): every draft costs a full token's compute
    k, table = choose_chain_length(a, lambda m: float(m), free)
    assert table[1] == pytest.approx(1.8 / 2) and k == 0
    # an expensive drafter shortens the chain
    k_cheap, _ = choose_chain_length(a, lambda m: 1 + 0.05 * m, lambda k: 0.02 * k)
    k_dear, _ = choose_chain_length(a, lambda m: 1 + 0.05 * m, lambda k: 0.5 * k)
    assert k_cheap == 4 and k_dear == 1
    assert predicted_speedup(a, 2, flat, lambda k: 0.5) == pytest.approx(2.4 / 1.5)


def test_heldout_acceptance_reads_the_checkpoint_step(tmp_path):
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    rows = [{"step": 10, "eval/a_1": 0.4, "eval/a_2": 0.1}, {"step": 20, "train/loss": 1.0},
            {"step": 20, "eval/a_1": 0.5, "eval/a_2": 0.2, "eval/a_3": 0.1}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "best.json").write_text(json.dumps({"step": 10}))
    assert heldout_acceptance(run / "best") == [0.4, 0.1]
    (run / "best.json").write_text(json.dumps({"step": 20}))
    assert heldout_acceptance(run / "best") == [0.5, 0.2, 0.1]
    assert heldout_acceptance(run / "best", temperature=1.0) is None  # not recorded (an older run)
    rows[2].update({"eval/sampled_temperature": 1.0, "eval/sampled_a_1": 0.3, "eval/sampled_a_2": 0.05})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert heldout_acceptance(run / "best", temperature=1.0) == [0.3, 0.05]
    assert heldout_acceptance(run / "best") == [0.5, 0.2, 0.1] and heldout_sampled_temperature(run / "best") == 1.0
    assert heldout_acceptance(tmp_path / "elsewhere") is None


def test_auto_draft_length_on_a_trained_run(tmp_path, tiny_llama):
    from mtp.methods import MethodSpecError, make_method
    from mtp.heads import build_head
    from mtp.heads.checkpoint import save_head

    model, tok = tiny_llama
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_head(build_head("eagle3", model, num_heads=3), run / "best")
    with pytest.raises(MethodSpecError, match="no held-out acceptance"):
        make_method(f"heads:{run / 'best'}:auto", model, tok)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 5, "eval/a_1": 0.9, "eval/a_2": 0.8, "eval/a_3": 0.7}) + "\n")
    (run / "best.json").write_text(json.dumps({"step": 5}))
    from mtp.engine import generate

    plain = generate(model, [5, 6, 7, 8, 5, 6], max_new_tokens=8, ignore_eos=True).tokens[0]
    for spec in (f"heads:{run / 'best'}:auto", f"pld+heads:{run / 'best'}:auto", f"union+heads:{run / 'best'}:auto",
                 f"adapt+heads:{run / 'best'}:auto"):
        m = make_method(spec, model, tok, batch_size=2)
        kind = {"heads": "HeadDrafter", "pld+heads": "LookupFirstDrafter", "union+heads": "LookupUnionDrafter",
                "adapt+heads": "AdaptiveUnionDrafter"}
        assert type(m.drafter).__name__ == kind[spec.split(":", 1)[0]]
        k = m.auto_k
        assert m.key.endswith(f"#k{k}")
        assert 1 <= k <= 3
        rec = m.run([5, 6, 7, 8, 5, 6], max_new_tokens=8, temperature=0.0, seed=0, ignore_eos=True)
        assert rec.new_tokens == 8 and rec.output_ids[-8:] == plain



def test_auto_draft_length_at_t1_reads_the_sampled_acceptance(tmp_path, tiny_llama, capsys):
    """At T > 0 ":auto" sets K from the chain's acceptance of sampled decoding that the trainer
    recorded (eval/sampled_a_k), not from the greedy one; a run without it falls back, and says so."""
    from mtp.methods import make_method
    from mtp.heads import build_head
    from mtp.heads.checkpoint import save_head

    model, tok = tiny_llama
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_head(build_head("hydra", model, num_heads=3), run / "best")
    row = {"step": 5, "eval/a_1": 0.95, "eval/a_2": 0.9, "eval/a_3": 0.85}
    (run / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    (run / "best.json").write_text(json.dumps({"step": 5}))
    make_method(f"heads:{run / 'best'}:auto", model, tok, temperature=1.0)
    assert "greedy: the run recorded no sampled acceptance" in capsys.readouterr().err
    row.update({"eval/sampled_temperature": 1.0, "eval/sampled_a_1": 0.01, "eval/sampled_a_2": 0.0,
                "eval/sampled_a_3": 0.0})
    (run / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    m = make_method(f"heads:{run / 'best'}:auto", model, tok, temperature=1.0)
    err = capsys.readouterr().err
    assert "(sampled at T=1) [0.01, 0.0, 0.0]" in err, err
    assert m.auto_k == 1 and m.key.endswith("#k1")  # drafting is predicted not to pay: the shortest chain
    for n, says in ((0, "on greedy answers, which overstate it"), (24, "on 24 sampled answers")):
        (run / "metrics.jsonl").write_text(json.dumps({**row, "eval/sampled_answers": n}) + "\n")
        make_method(f"heads:{run / 'best'}:auto", model, tok, temperature=1.0)
        assert f"(sampled at T=1 {says}" in capsys.readouterr().err
    greedy = make_method(f"heads:{run / 'best'}:auto", model, tok)
    assert "(greedy) [0.95, 0.9, 0.85]" in capsys.readouterr().err and greedy.key.endswith(f"#k{greedy.auto_k}")


def test_sweep_picks_the_draft_length_per_batch_size(tmp_path, tiny_llama):
    from eval import sweep
    from mtp.heads import build_head
    from mtp.heads.checkpoint import save_head

    model, tok = tiny_llama
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_head(build_head("eagle3", model, num_heads=2), run / "best")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "eval/a_1": 0.9, "eval/a_2": 0.9}) + "\n")
    (run / "best.json").write_text(json.dumps({"step": 1}))
    (label, drafters, ks), = sweep.variants([f"e3=heads:{run / 'best'}:auto"], model, tok, [1, 2])
    assert label == "e3"
    assert set(drafters) == set(ks) == {1, 2} and all(1 <= k <= 2 for k in ks.values())
    assert all(drafters[b].num_draft_tokens == ks[b] for b in (1, 2))
    spec = f"e3=heads:{run / 'best'}:auto"
    assert sweep.expand([spec, "pld"], [3]) == [spec, "pld:3"]
    points, _ = sweep.batch_sweep(model, [(label, drafters, ks)], [[5, 6, 7, 5, 6]], [1, 2], repeats=1, max_new_tokens=6)
    assert {p["batch_size"]: p["K"] for p in points} == ks and all(p["tau"] >= 1 for p in points)
    # A tree spec is complete as written, and the adaptive union is built at each batch size (its
    # verify-cost curve is timed at that size): one drafter per size, each costing its own batch.
    union = f"u=adapt+heads:{run / 'best'}:2:tree4"
    assert sweep.expand([union, f"t=heads:{run / 'best'}:2:tree4"], [3]) == [union, f"t=heads:{run / 'best'}:2:tree4"]
    (label, drafters, ks), = sweep.variants([union], model, tok, [1, 2])
    assert set(drafters) == {1, 2} and drafters[1] is not drafters[2] and ks == {1: 0, 2: 0}
    assert all(type(d).__name__ == "AdaptiveUnionDrafter" for d in drafters.values())
    points, _ = sweep.batch_sweep(model, [(label, drafters, ks)], [[5, 6, 7, 5, 6]], [1, 2], repeats=1, max_new_tokens=6)
    assert sorted(p["batch_size"] for p in points) == [1, 2] and all(p["tau"] >= 1 for p in points)


@pytest.mark.parametrize("nodes,depth", [(16, 3), (32, 4), (8, 4)])
def test_tree_spec_holds_the_nodes_it_names(tmp_path, tiny_llama, nodes, depth):
    """`:tree<N>` at depth K drafts trees of N nodes (each depth keeps max(4, ceil(N/K)) nodes; with a
    width of 4 whatever N, tree32 at depth 4 held 16 and tree16 at depth 3 held 12)."""
    from mtp.heads import build_head
    from mtp.heads.checkpoint import save_head
    from mtp.methods import make_method, tree_width

    model, tok = tiny_llama
    torch.manual_seed(0)
    save_head(build_head("eagle3", model, num_heads=4), tmp_path / "best")
    m = make_method(f"heads:{tmp_path / 'best'}:{depth}:tree{nodes}", model, tok)
    assert m.drafter.tree.top_k == tree_width(nodes, depth) and tree_width(nodes, depth) * depth >= nodes
    rec = m.run([5, 6, 7, 8, 5, 6], max_new_tokens=12, temperature=0.0, seed=0, ignore_eos=True)
    assert max(rec.draft_lengths) == nodes


def test_adapt_spec_sets_the_heads_chain_beside_their_tree(tmp_path, tiny_llama):
    """adapt+heads:<dir>:K:tree<N>:chain<N> offers the heads' greedy chain of N beside their tree
    (none without :chain<N>, or with :chain0); heads drafting chains have no separate chain choice, and
    the other forms refuse :chain<N> by name."""
    from mtp.engine import generate
    from mtp.heads import build_head
    from mtp.heads.checkpoint import save_head
    from mtp.methods import MethodSpecError, make_method

    model, tok = tiny_llama
    torch.manual_seed(0)
    save_head(build_head("hydra", model, num_heads=3), tmp_path / "best")
    base = f"adapt+heads:{tmp_path / 'best'}"
    plain = generate(model, [5, 6, 7, 8, 5, 6], max_new_tokens=16, ignore_eos=True).tokens[0]
    for tail, chain in ((":3:tree8", 0), (":3:tree8:chain3", 3), (":3:tree8:chain2", 2), (":3:tree8:chain0", 0), (":2", 0)):
        m = make_method(base + tail, model, tok)
        assert m.drafter.chain_tokens == chain and ("chain" in m.drafter.modes) == bool(chain)
        rec = m.run([5, 6, 7, 8, 5, 6], max_new_tokens=16, temperature=0.0, seed=0, ignore_eos=True)
        assert rec.output_ids[-16:] == plain
    with pytest.raises(MethodSpecError, match="tree"):
        make_method(base + ":2:chain2", model, tok)
    for combine in ("pld+", "union+", ""):  # only the adaptive union has a chain choice
        with pytest.raises(MethodSpecError, match="adapt"):
            make_method(f"{combine}heads:{tmp_path / 'best'}:3:tree8:chain3", model, tok)


def test_rank_acceptance_conditions_on_the_greedy_path():
    """acc[j][r] = P(rank r right at depth j+1 | heads 0..j-1's top candidates right), over the
    positions the last head counts; rank 0's products reproduce the chain's a_k."""
    from mtp.training.losses import chain_acceptance, rank_acceptance

    # 4 positions, 2 heads, top-2. Head 0: rank 0 right at t=0,1; rank 1 right at t=2. Head 1 (3
    # counted positions, t=0..2): rank 0 right at t=0 and t=2, rank 1 right at t=1.
    h0 = torch.tensor([[[1., 0.], [1., 0.], [0., 1.], [1., 0.]]])
    h1 = torch.tensor([[[1., 0.], [0., 1.], [1., 0.]]])
    mask = torch.ones(1, 3)
    hits, count = rank_acceptance([h0, h1], mask)
    assert count.tolist() == [3, 2]  # the last head counts t=0..2; the greedy path to depth 2 is right at t=0,1
    assert hits.tolist() == [[2, 1], [1, 1]]
    chain, n = chain_acceptance([h[..., 0] for h in (h0, h1)], mask)
    a = (chain / n).tolist()
    assert a[0] == pytest.approx(hits[0, 0] / count[0]) and a[1] == pytest.approx(a[0] * hits[1, 0] / count[1])
    hits, count = rank_acceptance([h0, h1], torch.tensor([[1., 0., 1.]]))  # t=1 masked
    assert count.tolist() == [2, 1] and hits.tolist() == [[1, 1], [1, 0]]


def test_tree_choice_follows_acceptance_and_costs():
    from mtp.shape import choose_tree

    acc = [[0.6, 0.2, 0.1], [0.5, 0.2, 0.1], [0.4, 0.1, 0.05]]
    free = lambda tree: 0.0  # noqa: E731
    big, table = choose_tree(acc, lambda m: 1.0, free)  # verification as cheap at any width
    assert big.size == max(table) and table[big.size]["speedup"] == pytest.approx(table[big.size]["tau"])
    assert all(table[n]["tau"] <= table[m]["tau"] + 1e-12 for n in table for m in table if n < m)
    small, table2 = choose_tree(acc, lambda m: 1 + 0.1 * m, free)  # each verified token costs 10% of a step
    assert 1 <= small.size < big.size
    assert table2[small.size]["speedup"] == pytest.approx(table2[small.size]["tau"] * 1.1 / (1 + 0.1 * (small.size + 1)))
    none, table3 = choose_tree(acc, lambda m: float(m), free)  # linear verify cost: nothing pays
    assert none is None and all(v["speedup"] < 1 for v in table3.values())
    # a drafter whose cost grows with the tree's nodes keeps the tree small
    dear, table4 = choose_tree(acc, lambda m: 1 + 0.01 * m, lambda t: 0.05 * t.size)
    assert dear.size < big.size and table4[dear.size]["cost"] == pytest.approx(0.05 * dear.size)


def test_autotree_method_runs_the_chosen_static_tree(tmp_path, tiny_llama):
    """heads:<dir>:autotree reads the acceptance by depth and rank next to the checkpoint and drafts
    the static tree the cost model picks; greedy output stays plain decoding's."""
    from mtp.engine import generate
    from mtp.heads import build_head
    from mtp.heads.checkpoint import save_head
    from mtp.methods import MethodSpecError, make_method
    from mtp.shape import heldout_rank_acceptance
    from mtp.tree import StaticTree

    model, tok = tiny_llama
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_head(build_head("hydra", model, num_heads=3), run / "best")
    (run / "best.json").write_text(json.dumps({"step": 5}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 5, "eval/a_1": 0.9}) + "\n")
    with pytest.raises(MethodSpecError, match="depth and rank"):
        make_method(f"heads:{run / 'best'}:autotree", model, tok)
    row = {"step": 5, "eval/a_1": 0.9}
    for d, ranks in enumerate([[0.9, 0.5, 0.3], [0.9, 0.4, 0.2], [0.8, 0.3, 0.1]]):
        row.update({f"eval/rank{r}_{d}": x for r, x in enumerate(ranks)})
    (run / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    assert heldout_rank_acceptance(run / "best") == [[0.9, 0.5, 0.3], [0.9, 0.4, 0.2], [0.8, 0.3, 0.1]]
    plain = generate(model, [5, 6, 7, 8, 5, 6], max_new_tokens=12, ignore_eos=True).tokens[0]
    for spec in (f"heads:{run / 'best'}:autotree", f"adapt+heads:{run / 'best'}:autotree"):
        m = make_method(spec, model, tok)
        rec = m.run([5, 6, 7, 8, 5, 6], max_new_tokens=12, temperature=0.0, seed=0, ignore_eos=True)
        assert rec.output_ids[-12:] == plain
    m = make_method(f"heads:{run / 'best'}:autotree", model, tok)
    assert "#tree" in m.key
    if isinstance(m.drafter.tree, StaticTree):  # a tree was predicted to pay on this machine
        assert m.key.endswith("-".join("".join(map(str, c)) for c in m.drafter.tree.choices))
    for bad in (":2:autotree", ":auto:autotree", ":tree8:autotree"):
        with pytest.raises(MethodSpecError, match="autotree"):
            make_method(f"heads:{run / 'best'}{bad}", model, tok)


def test_heads_spec_sets_how_chains_draft_when_sampling(tmp_path, tiny_llama):
    """:dt<t> (chains, and the adaptive union's :chain<N>): :dt0 drafts the heads' argmax at T > 0
    (point masses, no q), :dt<t> samples their distribution at temperature t; trees without a chain
    choice and bad values are refused by name."""
    from mtp.heads import build_head
    from mtp.heads.checkpoint import save_head
    from mtp.methods import MethodSpecError, make_method

    model, tok = tiny_llama
    torch.manual_seed(0)
    save_head(build_head("hydra", model, num_heads=3), tmp_path / "best")
    d = tmp_path / "best"
    for spec, want in ((f"heads:{d}:3", None), (f"heads:{d}:3:dt0", 0.0), (f"heads:{d}:dt0.5", 0.5),
                       (f"adapt+heads:{d}:2:dt0", 0.0), (f"adapt+heads:{d}:3:tree8:chain2:dt0", 0.0),
                       (f"adapt+heads:{d}:3:tree8:chain2", None)):
        m = make_method(spec, model, tok)
        heads = getattr(m.drafter, "fallback", m.drafter)
        assert heads.draft_temperature == want, spec
    probs = []
    for t in (0.0, 0.5):
        m = make_method(f"heads:{d}:3:dt{t:g}", model, tok)
        inner = m.drafter.propose
        m.drafter.propose = lambda ctx, inner=inner: probs.append((t, inner(ctx).probs)) or inner(ctx)
        rec = m.run([5, 6, 7, 8, 5, 6], max_new_tokens=8, temperature=1.0, seed=0, ignore_eos=True)
        assert len(rec.output_ids) >= 8
    assert all((p is None) == (t == 0.0) for t, p in probs) and len({t for t, _ in probs}) == 2
    for bad in (":dt-1", ":dtx", ":3:tree8:dt0"):
        with pytest.raises(MethodSpecError, match="dt"):
            make_method(f"heads:{d}" + bad, model, tok)
    with pytest.raises(MethodSpecError, match="chain"):  # a tree's nodes: only the union's chain takes :dt
        make_method(f"adapt+heads:{d}:3:tree8:dt0", model, tok)


def test_sampled_tree_spec_takes_its_shape_from_heldout_rank_acceptance(tmp_path, tiny_llama):
    """heads:<dir>:K:stree<N>: best_static_tree of N nodes to depth K over the held-out acceptance by
    depth and rank; greedy output equals plain decoding; at T > 0 the nodes carry their q (sampled),
    in the adaptive union too; without recorded rank acceptance it is refused with the fix."""
    from mtp.engine import generate
    from mtp.heads import build_head
    from mtp.heads.checkpoint import save_head
    from mtp.methods import MethodSpecError, make_method
    from mtp.tree import StaticTree

    model, tok = tiny_llama
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_head(build_head("hydra", model, num_heads=3), run / "best")
    with pytest.raises(MethodSpecError, match="held-out acceptance by depth"):
        make_method(f"heads:{run / 'best'}:2:stree4", model, tok)
    ranks = {f"eval/rank{r}_{d}": v for d in range(3) for r, v in enumerate((0.6, 0.2, 0.1))}
    (run / "metrics.jsonl").write_text(json.dumps({"step": 5, "eval/a_1": 0.6, **ranks}) + "\n")
    (run / "best.json").write_text(json.dumps({"step": 5}))
    plain = generate(model, [5, 6, 7, 8, 5, 6], max_new_tokens=10, ignore_eos=True).tokens[0]
    for spec in (f"heads:{run / 'best'}:2:stree4", f"adapt+heads:{run / 'best'}:2:stree4"):
        m = make_method(spec, model, tok)
        heads = getattr(m.drafter, "fallback", m.drafter)
        assert heads.sample_tree and heads.tree == StaticTree([(0,), (0, 0), (1,), (0, 1)])  # path products .6, .36, .2, .12
        rec = m.run([5, 6, 7, 8, 5, 6], max_new_tokens=10, temperature=0.0, seed=0, ignore_eos=True)
        assert rec.output_ids[-10:] == plain
    seen = []
    inner = heads.propose
    heads.propose = lambda ctx: seen.append(inner(ctx)) or seen[-1]
    m.run([5, 6, 7, 8, 5, 6], max_new_tokens=10, temperature=1.0, seed=0, ignore_eos=True)
    assert seen and all(d.probs is not None and d.parents is not None for d in seen)
    with pytest.raises(MethodSpecError, match="dt"):
        make_method(f"heads:{run / 'best'}:2:stree4:dt0", model, tok)
