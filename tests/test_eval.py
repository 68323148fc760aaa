"""Evaluation: metric arithmetic against hand-computed cases, the CLIs end to end on tiny models
(files and keys of the contract), resume and Ctrl-C, the notebook, self-speedup, exact match."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import eval  # noqa: F401  (sets OMP_WAIT_POLICY for subprocesses; torch is already loaded here)
from mtp import costmodel
from mtp import results


def S(method, pid, repeat, new, wall, forwards=None, acc=(), drafts=(), turn=0, cat="c", out=None):
    return {"method": method, "prompt_id": pid, "category": cat, "turn": turn, "repeat": repeat,
            "output_ids": list(out if out is not None else range(new)), "new_tokens": new, "wall_time_s": wall,
            "target_forwards": forwards if forwards is not None else new, "accept_lengths": list(acc),
            "draft_lengths": list(drafts)}


# ------------------------------------------------------------------------------------------------
# Metric arithmetic
# ------------------------------------------------------------------------------------------------


def test_acceptance_metrics_hand_computed():
    # Steps accepted 0, 2, 3 of 3 drafts each (+ a plain prefill): 1 + 0+1 + 2+1 + 3+1 = 9 tokens, 4 forwards.
    st = results.spec_stats([S("m", "p", 0, 9, 1.0, forwards=4, acc=[0, 2, 3], drafts=[3, 3, 3])])
    # tau is over the 3 decode steps (8 tokens); the prefill's token and forward are a separate figure
    assert st.tau == pytest.approx(8 / 3) and st.tokens_per_forward == pytest.approx(9 / 4)
    assert st.tau == pytest.approx(1 + sum(st.per_position_acceptance()))  # the identity REFERENCES states
    assert st.per_position_acceptance() == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    assert st.draft_acceptance_rate == pytest.approx(5 / 9)
    assert st.accept_length_histogram() == [1, 0, 1, 1]
    # a_k only counts steps that drafted at least k: a last step drafting 1 token says nothing about k = 2, 3
    st = results.spec_stats([S("m", "p", 0, 11, 1.0, forwards=5, acc=[0, 2, 3, 1], drafts=[3, 3, 3, 1])])
    assert st.per_position_acceptance() == pytest.approx([3 / 4, 2 / 3, 1 / 3])


def test_tokens_per_s_sums_turns_and_speedup_is_ratio_of_means():
    base = [S("b", "p1", 0, 10, 1.0), S("b", "p2", 0, 10, 1.0)]  # 10 and 10 tok/s
    # p1: two turns, 10 + 20 tokens in 1 + 1 s -> 15 tok/s (not the mean of 10 and 20 per turn... equal here)
    m = [S("m", "p1", 0, 10, 1.0), S("m", "p1", 0, 20, 1.0, turn=1), S("m", "p2", 0, 45, 1.0)]
    per = results.per_prompt_tokens_per_s(m)
    assert per[0] == pytest.approx({"p1": 15.0, "p2": 45.0})
    # ratio of means: (15 + 45)/2 / 10 = 3.0 ; the mean of ratios would be (1.5 + 4.5)/2 = 3.0 too, so skew p2:
    m2 = [S("m", "p1", 0, 10, 1.0), S("m", "p2", 0, 40, 2.0)]  # 10 and 20 tok/s
    base2 = [S("b", "p1", 0, 10, 2.0), S("b", "p2", 0, 10, 0.5)]  # 5 and 20 tok/s
    assert results.speedup_per_repeat(m2, base2) == {0: pytest.approx(15 / 12.5)}  # mean of ratios would be 1.5
    assert results.speedup_per_repeat(m, base) == {0: pytest.approx(3.0)}


def test_median_and_spread_over_repeats():
    base = [S("b", "p", r, 10, 1.0) for r in range(3)]
    m = [S("m", "p", r, n, 1.0) for r, n in enumerate([12, 20, 15])]
    sp, spread = results.speedup(m, base)
    assert sp == pytest.approx(1.5) and spread == pytest.approx(0.8)
    assert results.tokens_per_s(m) == (pytest.approx(15.0), pytest.approx(8.0))


def test_speedup_of_a_method_against_itself_is_one():
    m = [S("vanilla", f"p{i}", r, 10 + i, 0.5 + 0.1 * r) for i in range(3) for r in range(3)]
    s = results.summarize(m, ["vanilla"], greedy=True)
    o = s["methods"]["vanilla"]["overall"]
    assert o["speedup"] == pytest.approx(1.0) and o["speedup_spread"] == pytest.approx(0.0)
    assert o["exact_match"] == 1.0 and s["mismatches"] == []


def test_exact_match_catches_a_planted_mismatch():
    base = [S("vanilla", "p", r, 5, 1.0, out=[1, 2, 3, 4, 5]) for r in range(2)]
    good = [S("pld", "p", 0, 5, 1.0, out=[1, 2, 3, 4, 5])]
    bad = [S("pld", "p", 1, 5, 1.0, out=[1, 2, 9, 4, 5])]
    rate, mm = results.exact_match(good + bad, base)
    assert rate == 0.5
    assert mm == [{"method": "pld", "prompt_id": "p", "turn": 0, "repeat": 1, "first_diff": 2}]
    assert results.first_difference([1, 2], [1, 2, 3]) == 2 and results.first_difference([1], [1]) is None
    s = results.summarize(base + good + bad, ["vanilla", "pld"], greedy=True, mismatch_gaps={("pld", "p", 0, 1): 0.5})
    assert s["methods"]["pld"]["overall"]["exact_match"] == 0.5
    assert [(m["first_diff"], m["baseline"]) for m in s["mismatches"]] == [(2, "vanilla")]
    # sampled runs report no exact match
    assert math.isnan(results.summarize(base + bad, greedy=False)["methods"]["pld"]["overall"]["exact_match"])


def test_baseline_is_the_faster_of_hf_and_vanilla():
    samples = [S("hf", "p", 0, 10, 1.0), S("vanilla", "p", 0, 10, 0.8), S("pld", "p", 0, 10, 0.5)]
    assert results.choose_baseline(samples, ["hf", "vanilla", "pld"]) == "vanilla"
    assert results.choose_baseline(samples, ["pld"]) == "pld"


def test_jsonl_tolerates_a_torn_line(tmp_path):
    p = tmp_path / "s.jsonl"
    results.append_jsonl(p, {"a": 1})
    with open(p, "a") as f:
        f.write('{"a": 2')  # killed mid-write
    assert results.read_samples(p) == [{"a": 1}]
    results.repair_jsonl(p)
    results.append_jsonl(p, {"a": 3})
    assert results.read_samples(p) == [{"a": 1}, {"a": 3}]
    assert results.read_samples(tmp_path / "none.jsonl") == []


def test_pareto_front():
    pts = [(1, 10), (2, 8), (1.5, 7), (3, 3), (0.5, 11)]
    assert results.pareto_front(pts) == [4, 0, 1, 3]


def test_costmodel_formulas():
    assert costmodel.leviathan_tau(0.5, 2) == pytest.approx(1.75)
    assert costmodel.leviathan_speedup(0.5, 2, 0.25) == pytest.approx(1.75 / 1.5)
    assert costmodel.implied_alpha(1.75, 2) == pytest.approx(0.5, abs=1e-6)
    C = costmodel.interpolate({1: 1.0, 3: 2.0, 8: 4.0})
    assert (C(1), C(2), C(3), C(16)) == (1.0, 1.5, 2.0, 8.0)
    # a dip in a timed curve is noise: the curves choices are made from never fall with m
    assert costmodel.monotone({4: 2.0, 1: 1.0, 2: 1.3, 3: 1.2, 6: 1.9}) == {1: 1.0, 2: 1.3, 3: 1.3, 4: 2.0, 6: 2.0}
    # Leviathan with measured parts: (1 + 0.5 + 0.25) * C(1) / (t_draft + C(3)) = 1.75 / (0.5 + 2)
    assert costmodel.predict_chain([0.5, 0.25], 2, C, 0.5) == pytest.approx(1.75 / 2.5)
    # stepwise: prefill + steps: drafts [2, 2] (C(3) each) + 1 plain step, 3 decode draft calls at 0.1;
    # plain decoding of the same 7 tokens: prefill + 6 * C(1)
    s = {"new_tokens": 7, "target_forwards": 4, "draft_lengths": [2, 2], "accept_lengths": [2, 1]}
    p = costmodel.predict_stepwise([s], C, 0.1, prefill_s=1.0)
    assert p["predicted_speedup"] == pytest.approx((1 + 6) / (1 + 2 * 2 + 1 + 3 * 0.1))
    # two prompts: the bench's metric, a mean of per-prompt tokens/s (not a ratio of summed times)
    s2 = {"new_tokens": 2, "target_forwards": 2, "draft_lengths": [], "accept_lengths": [], "prompt_id": "b"}
    p = costmodel.predict_stepwise([{**s, "prompt_id": "a"}, s2], C, 0.1, prefill_s=1.0)
    assert p["predicted_speedup"] == pytest.approx((7 / 6.3 + 2 / 2.1) / (7 / 7 + 2 / 2))


def test_costmodel_from_the_runs_own_forwards():
    # forwards timed in the run: m=1 chain costs 1.0 (median of 0.9, 1.0, 5.0: an outlier does not move it),
    # m=3 chain 2.0, m=5 tree 4.0
    plain = {"new_tokens": 4, "target_forwards": 4, "prefill_time_s": 0.5, "draft_time_s": 0.0,
             "step_costs": [[0, 0, 0.9], [0, 0, 1.0], [0, 0, 5.0]]}
    spec = {"new_tokens": 7, "target_forwards": 3, "prefill_time_s": 0.5, "draft_time_s": 0.3, "repeat": 0,
            "prompt_id": "a",
            "step_costs": [[2, 0, 2.0], [4, 1, 4.0]]}
    curves = costmodel.run_cost_curves([plain, spec])
    assert curves["chain"] == {1: 1.0, 3: 2.0} and curves["tree"] == {5: 4.0}
    assert curves["count_chain"] == {1: 3, 3: 1} and curves["count_tree"] == {5: 1}
    # spec: prefill 0.5 + drafting 0.3 + C(3) + V(5) = 6.8; plain decoding of its 7 tokens: 0.5 + 6 * C(1)
    p = costmodel.predict_in_run([spec], curves)
    assert p["predicted_speedup_in_run"] == pytest.approx(6.5 / 6.8)
    # the bench's metric: mean over prompts of tokens/s, over that of plain decoding (not a ratio of summed times)
    other = {**spec, "prompt_id": "b", "new_tokens": 3, "target_forwards": 2, "draft_time_s": 0.0,
             "step_costs": [[2, 0, 2.0]]}
    p2 = costmodel.predict_in_run([spec, other], curves)  # b: 0.5 + C(3) = 2.5 against plain 0.5 + 2 C(1) = 2.5
    assert p2["predicted_speedup_in_run"] == pytest.approx((7 / 6.8 + 3 / 2.5) / (7 / 6.5 + 3 / 2.5))
    # a generation that stopped at its first token (EOS) was timed too: it has no decode forwards
    eos = {**spec, "prompt_id": "c", "new_tokens": 1, "target_forwards": 1, "draft_time_s": 0.0, "step_costs": []}
    p3 = costmodel.predict_in_run([spec, other, eos], curves)
    assert p3["predicted_speedup_in_run"] == pytest.approx((7 / 6.8 + 3 / 2.5 + 1 / 0.5) / (7 / 6.5 + 3 / 2.5 + 1 / 0.5))
    assert costmodel.time_breakdown([{**eos, "wall_time_s": 1.0}], None, 99.0)["breakdown"] == "timed in the run"
    assert costmodel.predict_in_run([{"new_tokens": 3, "target_forwards": 3}], curves) == {}  # nothing timed
    hf_row = {"new_tokens": 3, "target_forwards": 3, "step_costs": []}  # written before HF rows had None
    assert not costmodel.timed(hf_row) and costmodel.predict_in_run([hf_row], curves) == {}
    assert costmodel.predict_in_run([spec], costmodel.run_cost_curves([spec])) == {}  # no one-token forward
    b = costmodel.time_breakdown([{**spec, "wall_time_s": 10.0}], None, 99.0)
    assert b["breakdown"] == "timed in the run"
    assert (b["prefill_share"], b["verify_share"], b["draft_share"]) == pytest.approx((0.05, 0.6, 0.03))
    assert b["other_share"] == pytest.approx(0.32)


def test_offline_acceptance_accumulator():
    from eval.acceptance import AcceptanceAccumulator

    g = torch.Generator().manual_seed(0)
    T, V, K = 12, 7, 3
    target = torch.randn(T, V, generator=g) * 3
    ids = torch.randint(0, V, (T,), generator=g)
    mask = torch.tensor([False] * 4 + [True] * (T - 4))
    # Oracle heads: head j at t returns the target's logits at t+1+j -> everything accepted.
    oracle = [torch.cat([target[1 + j:], target[:1 + j]]) for j in range(K)]
    acc = AcceptanceAccumulator(K, [0.0, 1.0], [1])
    acc.add(target, oracle, ids, mask)
    r = acc.result()
    assert r["positions"] == T - 1 - K - 3 + 1 - 1  # t with mask[t+1] (t >= 3) and t + 1 + K <= T - 1
    assert r["T=0"]["expected_tau"] == pytest.approx(K + 1)
    assert r["T=1"]["accept_rate_per_position"] == pytest.approx([1.0] * K)
    # Two-token vocabulary by hand: p = (0.5, 0.5), q = (0.9, 0.1) everywhere -> alpha = 0.6 per head.
    p_l = torch.zeros(6, 2)
    q_l = torch.log(torch.tensor([0.9, 0.1])).expand(6, 2)
    acc = AcceptanceAccumulator(2, [1.0, 0.0], [1, 2])
    acc.add(p_l, [q_l, q_l], torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.bool))
    r = acc.result()
    assert r["T=1"]["accept_rate_per_position"] == pytest.approx([0.6, 0.36])
    assert r["T=1"]["expected_tau"] == pytest.approx(1.96)
    assert r["topk_accuracy"]["1"] == [1.0, 1.0] and r["topk_accuracy"]["2"] == [1.0, 1.0]


def test_suites():
    from mtp.suites import CATEGORIES, balanced, load_suite, with_lengths

    items = load_suite("spec")
    assert {it.category for it in items} == set(CATEGORIES) and len({it.id for it in items}) == len(items)
    assert all(len(it.turns) == 2 for it in items if it.category == "multi-turn")
    assert [it.category for it in balanced(items, 6)] == list(CATEGORIES)
    assert len(load_suite("humaneval")) == 164
    mixed = with_lengths(items[:2], ["short-long", "long-short"], long_input_tokens=100, short_output_tokens=8,
                         long_output_tokens=32)
    assert [(it.length, it.min_input_tokens, it.max_new_tokens) for it in mixed] == [
        ("short-long", 0, 32), ("short-long", 0, 32), ("long-short", 100, 8), ("long-short", 100, 8)]


# ------------------------------------------------------------------------------------------------
# CLIs end to end on tiny models
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the CLIs below also get --threads 1: tiny models, busy shared cores
    yield
    torch.set_num_threads(n)


def _suite(tmp: Path) -> Path:
    p = tmp / "suite.jsonl"
    rows = [{"id": "chat", "category": "multi-turn", "turns": ["say hi", "and again"]},
            {"id": "copy", "category": "rag", "turns": ["repeat: the cat sat on the mat. the cat sat on"]},
            {"id": "q", "category": "qa", "turns": ["why is the sky blue?"]}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


BENCH_ARGS = ["--model", "tiny-llama", "--threads", "1", "--methods", "hf,vanilla,copy=vanilla,self=draft:tiny-llama:3",
              "--max-new-tokens", "8", "--repeats", "3", "--warmup", "1"]


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    from eval import bench

    n = torch.get_num_threads()
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "run"
    rc = bench.main(BENCH_ARGS + ["--suite", str(_suite(tmp)), "--out", str(out)])
    torch.set_num_threads(n)
    assert rc == 0
    return out


def test_report_gives_the_command_that_reproduces_a_run():
    """The command under a table: eval.bench's own, or the script that ran, with OMP_WAIT_POLICY in
    front where it was set to other than the eval scripts' PASSIVE (absolute tokens/s depend on it)."""
    from mtp.report import command_line

    bench = {"argv": ["/x/eval/bench.py", "--model", "m"], "env": {"OMP_WAIT_POLICY": "PASSIVE"}}
    assert command_line(bench) == "python -m eval.bench --model m"
    assert command_line({**bench, "env": {"OMP_WAIT_POLICY": "ACTIVE"}}) == "OMP_WAIT_POLICY=ACTIVE python -m eval.bench --model m"
    assert command_line({**bench, "env": {"OMP_WAIT_POLICY": ""}}) == "OMP_WAIT_POLICY= python -m eval.bench --model m"
    assert command_line({"argv": ["docs/results/r22/bench_hs.py", "--x"], "env": {"OMP_WAIT_POLICY": None}}) == \
        "PYTHONPATH=. python docs/results/r22/bench_hs.py --x"


def test_bench_writes_the_documented_files(bench_dir):
    for name in ("samples.jsonl", "summary.json", "summary.csv", "meta.json", "report.md", "speedup.png",
                 "acceptance_by_position.png", "tau_by_category.png", "accept_hist.png", "speedup_vs_tau.png"):
        assert (bench_dir / name).is_file(), name
    meta = json.loads((bench_dir / "meta.json").read_text())
    assert meta["auto_k"] == {}  # no ":auto" method here
    # absolute tokens/s depend on OpenMP's wait policy (eval/__init__.py), so the report names it
    policy = meta["env"]["OMP_WAIT_POLICY"] or "default"
    assert f"threads 1, OpenMP wait policy {policy}, device cpu" in (bench_dir / "report.md").read_text()
    samples = results.read_jsonl(bench_dir / "samples.jsonl")
    assert len(samples) == 4 * 3 * 4  # (2 + 1 + 1 turns) x 3 repeats x 4 methods
    assert all(set(results.SAMPLE_KEYS) <= set(s) for s in samples)
    assert len({results.cell_key(s) for s in samples}) == len(samples)
    summary = json.loads((bench_dir / "summary.json").read_text())
    assert summary["baseline"] in ("hf", "vanilla")
    for m, e in summary["methods"].items():
        assert set(results.SUMMARY_KEYS) <= set(e["overall"])
        assert set(e["category"]) == {"multi-turn", "rag", "qa"}
        assert e["overall"]["exact_match"] == 1.0, m  # lossless methods reproduce greedy output
    assert summary["methods"]["vanilla"]["overall"]["tau"] == 1.0
    self_draft = summary["methods"]["self"]["overall"]  # the target drafting for itself: all accepted
    assert self_draft["draft_acceptance_rate"] > 0.9 and self_draft["tau"] > 2.5
    # the same method under two names: the same cells (outputs, forwards), timed separately
    def cells(method):
        return sorted((results.cell_key(s)[1:], s["output_ids"], s["target_forwards"]) for s in samples
                      if s["method"] == method)

    assert cells("copy") == cells("vanilla")
    assert results.speedup([s for s in samples if s["method"] == "copy"],
                           [s for s in samples if s["method"] == "vanilla"])[0] > 0
    meta = json.loads((bench_dir / "meta.json").read_text())
    assert {"config", "git", "versions", "cpu", "threads", "dtype"} <= set(meta)
    header = (bench_dir / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"method", "scope", "group", *results.SUMMARY_KEYS} <= set(header)
    res = results.load(bench_dir)
    assert len(res.samples) == len(samples) and set(res.summary.scope) == {"overall", "category"}
    # turn 2 of the chat prompt carries vanilla's own turn-1 answer
    t1 = [s for s in samples if s["prompt_id"] == "chat" and s["turn"] == 1]
    t0 = [s for s in samples if s["prompt_id"] == "chat" and s["turn"] == 0]
    assert min(s["prompt_tokens"] for s in t1) > max(s["prompt_tokens"] for s in t0)


def test_bench_resumes_and_keeps_cells_on_ctrl_c(tmp_path, monkeypatch, one_thread):
    from eval import bench

    suite, out = _suite(tmp_path), tmp_path / "run"
    args = ["--model", "tiny-llama", "--threads", "1", "--methods", "vanilla,pld:3", "--max-new-tokens", "6",
            "--repeats", "2", "--warmup", "0", "--no-plots", "--suite", str(suite), "--out", str(out)]
    real_append, calls = results.append_jsonl, []

    def flaky_append(path, rec):
        if len(calls) == 5:
            raise KeyboardInterrupt  # Ctrl-C while the 6th cell is being saved
        calls.append(rec)
        real_append(path, rec)

    monkeypatch.setattr(results, "append_jsonl", flaky_append)
    assert bench.main(args) == 130
    assert len(results.read_jsonl(out / "samples.jsonl")) == 5
    assert (out / "summary.json").exists()  # written on the way out
    monkeypatch.setattr(results, "append_jsonl", real_append)
    ran = []
    monkeypatch.setattr(results, "append_jsonl", lambda p, rec: (ran.append(rec), real_append(p, rec)))
    assert bench.main(args) == 0
    assert len(ran) == 4 * 2 * 2 - 5  # only the missing cells ran
    assert bench.main(args) == 0 and len(ran) == 11  # nothing left to run
    assert bench.main(args[:-5] + ["--repeats", "3"] + args[-4:]) == 0 and len(ran) == 11 + 8
    samples = results.read_jsonl(out / "samples.jsonl")
    assert len({results.cell_key(s) for s in samples}) == len(samples) == 24
    with pytest.raises(SystemExit):  # a different config is refused
        bench.main(args[:-2] + ["--temperature", "1"] + args[-2:])


def test_changed_method_reruns_its_cells_and_bad_specs_are_refused(tmp_path, one_thread, tiny_llama):
    from eval import bench
    from mtp.methods import MethodSpecError, make_method

    suite, out = _suite(tmp_path), tmp_path / "run"
    base = ["--model", "tiny-llama", "--threads", "1", "--max-new-tokens", "5", "--repeats", "1", "--warmup", "0",
            "--no-plots", "--suite", str(suite), "--out", str(out), "--methods"]
    assert bench.main(base + ["vanilla,x=pld:8"]) == 0
    n = len(results.read_jsonl(out / "samples.jsonl"))
    assert bench.main(base + ["vanilla,x=hf-pld:2"]) == 0  # same name, another method: x runs again
    samples = results.read_jsonl(out / "samples.jsonl")
    assert len(samples) == n and {s["method_key"] for s in samples if s["method"] == "x"} == {"hf-pld:2"}
    model, tok = tiny_llama
    for bad in ("pld:abc", "pld:-1", "pld:0", "pldx", "hf-pldzzz", "draft:", "nonsense"):
        with pytest.raises(MethodSpecError):
            make_method(bad, model, tok)
    with pytest.raises(MethodSpecError, match="not found"):
        make_method(f"heads:{tmp_path / 'missing'}", model, tok)
    with pytest.raises(SystemExit, match="error: .*pld:abc"):
        bench.main(base + ["pld:abc"])


def test_costmodel_cli(bench_dir, one_thread):
    from eval import costmodel

    assert costmodel.main(["--bench", str(bench_dir), "--tokens", "1,2,4", "--repeats", "2", "--threads", "1",
                           "--draft-prompts", "1"]) == 0
    d = json.loads((bench_dir / "costmodel.json").read_text())
    assert [v["tokens"] for v in d["verify_cost"]] == [1, 2, 4]
    rows = {r["method"]: r for r in d["methods"]}
    assert set(rows) == {"hf", "vanilla", "copy", "self"}
    assert rows["self"]["K"] == 3 and rows["self"]["draft_step_ms"] > 0
    assert {"predicted_speedup", "measured_speedup", "gap", "predicted_speedup_in_run", "gap_in_run"} <= set(rows["self"])
    # the bench timed its own forwards: one-token forwards (vanilla) and K+1 = 4-token ones (self's drafts)
    curve = {(c["kind"], c["tokens"]): c for c in d["run_cost"]}
    assert ("chain", 1) in curve and curve["chain", 1]["ms"] > 0 and curve["chain", 1]["forwards"] > 0
    assert rows["self"]["breakdown"] == "timed in the run"
    assert rows["self"]["predicted_speedup_in_run"] > 0
    assert (bench_dir / "costmodel.png").exists() and results.load(bench_dir).costmodel is not None


def test_costmodel_times_auto_methods_at_the_benchs_length():
    """eval.costmodel times a ":auto" method at the draft length the bench chose (meta.json auto_k),
    not at a fresh choice that a noisy machine may make differently."""
    from eval.costmodel import pin_auto

    specs = [("h", "heads:runs/x/best:auto"), ("p", "pld+heads:runs/x/best:auto"), ("t", "heads:runs/x/best:3:tree16"),
             ("n", "heads:runs/y/best:auto"), ("pld", "pld")]
    assert pin_auto(specs, {"h": 3, "p": 2}) == [
        ("h", "heads:runs/x/best:3"), ("p", "pld+heads:runs/x/best:2"), ("t", "heads:runs/x/best:3:tree16"),
        ("n", "heads:runs/y/best:auto"), ("pld", "pld")]


def test_sweep_cli(tmp_path, one_thread):
    from eval import sweep

    out = tmp_path / "sweep"
    assert sweep.main(["--model", "tiny-llama", "--threads", "1", "--methods", "vanilla,pld", "--draft-lengths", "2",
                       "--batch-sizes", "1,2", "--max-new-tokens", "5", "--repeats", "1", "--suite", "qa",
                       "--out", str(out)]) == 0
    pts = json.loads((out / "sweep.json").read_text())["points"]
    assert {(p["label"], p["batch_size"]) for p in pts} == {(m, b) for m in ("vanilla", "pld:2") for b in (1, 2)}
    for p in pts:
        assert p["tokens_per_s_total"] == pytest.approx(p["batch_size"] * p["tokens_per_s_per_seq"])
        # Every batch size decodes the same prompts (the lcm of 1 and 2): batch 1 is not one prompt.
        assert p["num_prompts"] == 2
        assert p["tokens_per_s_total"] * p["wall_s"] == pytest.approx(2 * 5, rel=1e-6)
    assert any(p.get("pareto") for p in pts) and (out / "sweep.png").exists()


def test_batch_sweep_runs_every_batch_size_over_the_same_prompts(one_thread):
    """Batch 1 decodes the N prompts one by one, batch 2 as N/2 pairs: the same rows, the same greedy
    tokens, so the points compare one workload. N must split evenly at every batch size."""
    from unittest import mock

    from mtp import sweep
    from mtp.models import load_model

    model, _ = load_model("tiny-llama", dtype=torch.float32, device="cpu")
    prompts = [[5, 6, 7], [8, 9, 10, 11], [12, 13], [14, 15, 16]]
    calls = []
    real = sweep.generate

    def spy(model, rows, **kw):
        o = real(model, rows, **kw)
        calls.append((len(rows), [tuple(r) for r in rows], [tuple(t) for t in o.tokens]))
        return o

    with mock.patch.object(sweep, "generate", spy):
        points, _ = sweep.batch_sweep(model, [("plain", None, None)], prompts, [1, 2, 4], repeats=1, max_new_tokens=4)
    timed = calls[3:]  # after one short warm-up batch per batch size
    for B in (1, 2, 4):
        runs = [c for c in timed if c[0] == B]
        assert len(runs) == 4 // B
        assert [r for c in runs for r in c[1]] == [tuple(p) for p in prompts]
    by_b = {B: [t for c in timed if c[0] == B for t in c[2]] for B in (1, 2, 4)}
    assert by_b[1] == by_b[2] == by_b[4]  # one workload at every batch size (greedy, fp32)
    assert {p["batch_size"]: p["num_prompts"] for p in points} == {1: 4, 2: 4, 4: 4}
    with pytest.raises(ValueError, match="split evenly"):
        sweep.batch_sweep(model, [("plain", None, None)], prompts, [1, 2, 4], num_prompts=6)


def test_acceptance_cli_and_heads_bench(tmp_path, one_thread):
    from eval import acceptance, bench
    from mtp import heads
    from mtp.models import load_model

    model, _ = load_model("tiny-llama", dtype=torch.float32, device="cpu")
    heads.build_head("medusa", model, num_heads=2).save_pretrained(tmp_path / "heads")
    bdir = tmp_path / "bench"
    assert bench.main(["--model", "tiny-llama", "--threads", "1", "--methods", f"vanilla,heads:{tmp_path / 'heads'}",
                       "--suite", str(_suite(tmp_path)), "--num-prompts", "1", "--max-new-tokens", "5",
                       "--repeats", "1", "--no-plots", "--out", str(bdir)]) == 0
    out = tmp_path / "acc"
    assert acceptance.main(["--model", "tiny-llama", "--threads", "1", "--heads", str(tmp_path / "heads"),
                            "--data", "qa", "--num-prompts", "2", "--max-new-tokens", "6", "--bench", str(bdir),
                            "--out", str(out)]) == 0
    d = json.loads((out / "acceptance.json").read_text())
    assert len(d["topk_accuracy"]["1"]) == 2 and d["T=0"]["expected_tau"] >= 1.0
    assert d["bench"] is not None and d["bench"]["tau"] >= 1.0


def test_notebook_runs(bench_dir, tmp_path):
    import os

    import nbclient
    import nbformat

    nb_path = Path(__file__).resolve().parent.parent / "notebooks" / "analysis.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    os.environ["MTP_RESULTS_DIR"] = str(bench_dir)
    os.environ["MTP_SWEEP_DIR"] = str(tmp_path / "none")
    try:
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": str(nb_path.parent)}}).execute()
    finally:
        del os.environ["MTP_RESULTS_DIR"], os.environ["MTP_SWEEP_DIR"]
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("family", ["hydra", "medusa", "eagle", "eagle3", "deepseek", "parallel"])
def test_offline_acceptance_scores_what_the_drafter_drafts(tiny_llama, family):
    """eval.acceptance's teacher-forced logits, for a head with a reduced draft vocabulary, are the
    logits the drafter picks its first token from after the same prefix (target ids, not draft-vocabulary
    indices: scoring the latter gave 0 accuracy)."""
    from eval.acceptance import draft_logits
    from mtp.heads import build_head

    model, _ = tiny_llama
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 128, (1, 14), generator=g)
    counts = torch.bincount(ids.flatten(), minlength=128)
    torch.manual_seed(0)
    head = build_head(family, model, num_heads=2, draft_vocab_size=32, token_counts=counts).eval()
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        hs = {l: out.hidden_states[l] for l in head.config.hidden_layers}
        z = draft_logits(head, hs, ids, 128)[0][0]  # head 1: [T, V]
        assert z.shape == (14, 128) and (z.argmax(-1)[:, None] == head.d2t[None]).any(-1).all()
        for t in range(1, 12):
            state = head.draft_state(1, ids.device)
            head.draft_observe(state, {l: h[:, : t + 1] for l, h in hs.items()}, torch.tensor([t + 1]),
                               [ids[0, : t + 2].tolist()])
            seen = []
            head.draft_chain(state, [ids[0, : t + 2].tolist()], 1,
                             lambda lg: seen.append(lg) or head.d2t[lg.argmax(-1)])
            assert seen[0].shape == (1, 32)  # drafting logits are over the draft vocabulary
            assert torch.allclose(seen[0][0].float(), z[t, head.d2t], atol=1e-4), t
            assert int(head.d2t[seen[0][0].argmax()]) == int(z[t].argmax()), t


def test_acceptance_finds_the_bench_chain_of_its_heads(tmp_path):
    """bench_tau matches `heads:<dir>:auto` and `:K` chains, never a tree, lookup-first or union method."""
    from eval.acceptance import bench_tau

    hd = tmp_path / "heads"
    hd.mkdir()
    o = {"tau": 1.5, "accept_rate_per_position": [0.5]}
    for methods, want in [({"t": f"heads:{hd}:3:tree16", "p": f"pld+heads:{hd}:3", "u": f"union+heads:{hd}:3",
                           "h": f"heads:{hd}:auto"}, "h"),
                          ({"k": f"heads:{hd}:4"}, "k"), ({"t": f"heads:{hd}:3:tree16"}, None)]:
        (tmp_path / "meta.json").write_text(json.dumps({"config": {"methods": methods, "temperature": 0.0}}))
        (tmp_path / "summary.json").write_text(json.dumps({"methods": {m: {"overall": o} for m in methods}}))
        got = bench_tau(tmp_path, str(hd))
        assert (got or {}).get("method") == want


def test_leakage_counts_held_out_ngrams_seen_in_training(tmp_path, capsys):
    """eval.leakage: a held-out answer copied from a training answer is all seen; new text is not."""
    from eval import leakage

    base = list(range(10, 30))
    recs = [{"prompt_id": f"p{i}", "prompt_ids": [1, 2], "response_ids": base} for i in range(30)]
    recs += [{"prompt_id": f"n{i}", "prompt_ids": [1, 2], "response_ids": list(range(100 + 30 * i, 120 + 30 * i))}
             for i in range(30)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "samples.jsonl").write_text(json.dumps({"method": "vanilla", "repeat": 0, "output_ids": base[:12]}) + "\n"
                                         + json.dumps({"method": "pld", "repeat": 0, "output_ids": [5000] * 12}) + "\n")
    assert leakage.main(["--data", str(data), "--eval-fraction", "0.3", "--n", "4", "--bench", str(bench),
                         "--out", str(tmp_path / "o")]) == 0
    res = json.loads((tmp_path / "o" / "leakage.json").read_text())
    from mtp.data.dataset import load_examples, split_examples

    _, held = split_examples(load_examples(data), 0.3, 0)
    copies = sum(e.group.startswith("p") for e in held)
    assert res["held_out_ngrams"] == 17 * len(held)
    assert res["held_out_seen"] == pytest.approx(copies / len(held))  # copies all seen, new answers never
    assert res["bench_seen"] == 1.0
    assert leakage.main(["--data", str(data), "--bench", str(bench), "--method", "pld", "--n", "4"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["bench_seen"] == 0.0
    assert leakage.main(["--data", str(data), "--bench", str(bench), "--method", "nope"]) == 2


def test_shape_rows_pick_each_familys_faster_shape_and_compare_with_lookup(tmp_path):
    from mtp.io import atomic_write_json
    from mtp.report import shape_rows

    def e(tau, sp):
        return {"overall": {"tau": tau, "speedup": sp, "draft_cost": 0.1}}

    atomic_write_json(tmp_path / "summary.json", {"methods": {
        "vanilla": e(1.0, 1.0), "pld": e(1.8, 1.7),
        "hydra": e(1.4, 1.1), "hydra-tree": e(2.0, 0.9),  # chain faster; the tree beats lookup's tau
        "eagle3": e(1.5, 0.95), "eagle3-tree": e(1.9, 1.2),  # tree faster and above lookup's tau
        "medusa": e(1.2, 0.9),  # no tree beside it: not a family pair
    }})
    rows = {r["family"]: r for r in shape_rows(tmp_path)}
    assert set(rows) == {"hydra", "eagle3"}
    assert (rows["hydra"]["best shape"], rows["hydra"]["beats lookup's tau"], rows["hydra"]["faster than plain"]) == \
        ("chain", "no", "yes")
    assert (rows["eagle3"]["best shape"], rows["eagle3"]["tau"], rows["eagle3"]["beats lookup's tau"]) == ("tree", "1.90", "yes")
    assert rows["eagle3"]["other shape"] == "1.50 / 0.95x" and rows["eagle3"]["lookup tau"] == "1.80"
    # the cost model's static tree is a third shape; two of the three make a family
    atomic_write_json(tmp_path / "summary.json", {"methods": {
        "pld": e(1.8, 1.7), "hydra": e(1.4, 1.1), "hydra-tree": e(2.0, 0.9), "hydra-autotree": e(1.9, 1.3),
        "eagle-tree": e(1.7, 1.0), "eagle-autotree": e(1.6, 1.05), "medusa-autotree": e(1.5, 1.0)}})
    rows = {r["family"]: r for r in shape_rows(tmp_path)}
    assert set(rows) == {"hydra", "eagle"}
    assert (rows["hydra"]["best shape"], rows["hydra"]["speedup"]) == ("autotree", "1.30x")
    assert rows["hydra"]["other shape"] == "chain 1.40 / 1.10x, tree 2.00 / 0.90x"
    assert (rows["eagle"]["best shape"], rows["eagle"]["other shape"]) == ("autotree", "1.70 / 1.00x")
