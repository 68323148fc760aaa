"""Draft length from the cost model: the choice follows the costs, and :auto runs end to end."""
import json

import pytest
import torch

from mtp.shape import choose_chain_length, heldout_acceptance, predicted_speedup


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
