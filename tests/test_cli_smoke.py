"""Every eval script (and train.figures' engine figure) end to end on tiny-llama: a couple of prompts,
a handful of tokens, one repeat. Each writes a results folder that mtp.results reads back with
consistent numbers (tokens and forwards summed from the samples, tau >= 1); no wall-clock asserts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import eval  # noqa: F401  (OMP_WAIT_POLICY)
from mtp import results

TINY = ["--model", "tiny-llama", "--threads", "1"]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def heads_dir(tmp_path_factory):
    from mtp.heads import build_head
    from mtp.models import load_model

    model, _ = load_model("tiny-llama", dtype=torch.float32, device="cpu")
    path = tmp_path_factory.mktemp("heads") / "medusa"
    build_head("medusa", model, num_heads=2).save_pretrained(path)
    return path


def check_folder(path: Path, methods: list[str]) -> results.Results:
    """The folder loads; each method's summary agrees with its samples."""
    res = results.load(path)
    assert (path / "report.md").is_file() and (path / "meta.json").is_file()
    assert set(res.raw_summary["methods"]) == set(methods)
    for m in methods:
        ms = res.samples[res.samples.method == m]
        o = res.raw_summary["methods"][m]["overall"]
        assert len(ms) == o["num_samples"] > 0
        assert o["new_tokens"] == ms.new_tokens.sum() and o["target_forwards"] == ms.target_forwards.sum()
        assert o["tau"] >= 1.0 and (ms.tau >= 1.0).all()
        assert {"method_key", "draft_depths", "draft_time_s", "prompt_tokens"} <= set(ms.columns)
    return res


def test_bench(tmp_path, capsys):
    import shutil

    from eval import bench, report

    out = tmp_path / "run" / "t0"
    assert bench.main(TINY + ["--methods", "vanilla,pld:3", "--suite", "qa", "--num-prompts", "2",
                              "--max-new-tokens", "5", "--repeats", "1", "--warmup", "0", "--no-plots",
                              "--out", str(out)]) == 0
    res = check_folder(out, ["vanilla", "pld:3"])
    assert len(res.samples) == 2 * 2 and res.raw_summary["methods"]["pld:3"]["overall"]["exact_match"] == 1.0
    assert report.main([str(tmp_path / "run")]) == 0  # eval.report over the run folder
    shutil.copytree(tmp_path / "run", tmp_path / "run2")
    capsys.readouterr()
    assert report.main([str(tmp_path / "run"), str(tmp_path / "run2")]) == 0  # two runs: rows say which
    out = capsys.readouterr().out
    assert "| model | run | method |" in out and "| tiny-llama | run2 | pld:3 |" in out
    # --readme splices the table between the markers, keeping the text around them; --plot names the plot
    readme, docs = tmp_path / "R.md", tmp_path / "docs"
    readme.write_text("intro\n<!-- results-table:begin -->\nold table\n<!-- results-table:end -->\nafter\n")
    runs = [str(tmp_path / "run"), str(tmp_path / "run2")]
    assert report.main(runs + ["--readme", str(readme), "--docs", str(docs), "--plot", "acc.png"]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("after\n") and "old table" not in text
    assert "| tiny-llama | run2 | pld:3 |" in text
    assert (docs / "acc.png").is_file() and (docs / "run2" / "t0" / "summary.json").is_file()
    assert report.main(runs + ["--docs", str(tmp_path / "docs2"), "--plot", "none"]) == 0
    assert not list((tmp_path / "docs2").glob("*.png"))
    readme.write_text("no markers\n")
    assert report.main(runs + ["--readme", str(readme)]) == 2 and readme.read_text() == "no markers\n"


def test_bench_foundation(tmp_path, capsys):
    from eval import bench_foundation

    assert bench_foundation.main(["--model", "tiny-llama", "--threads", "1", "--dtypes", "fp32", "--methods",
                                  "vanilla,pld", "--num-prompts", "2", "--max-new-tokens", "4", "--repeats", "1",
                                  "--warmup", "0", "--no-plots", "--out", str(tmp_path)]) == 0
    check_folder(tmp_path / "fp32", ["vanilla", "pld"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["fp32_greedy_exact"] is True and last["by_dtype"]["fp32"]["out"] == str(tmp_path / "fp32")


def test_bench_trees(tmp_path, heads_dir):
    from eval import bench_trees

    assert bench_trees.main(["--model", "tiny-llama", "--threads", "1", "--dtype", "fp32", "--heads", str(heads_dir),
                             "--num-prompts", "2", "--max-new-tokens", "4", "--repeats", "1", "--batch-sizes", "1,2",
                             "--tree-sizes", "1,3", "--prefix-len", "8", "--no-plots", "--out", str(tmp_path)]) == 0
    res = check_folder(tmp_path, ["vanilla", "chain", "static-tree", "searched-tree", "dynamic-tree"])
    assert list(res.verify_cost.tokens) == [2, 4] and len(res.sweep) == 2 * 2
    assert all(e["overall"]["exact_match"] == 1.0 for e in res.raw_summary["methods"].values())


def test_costmodel_without_a_bench(tmp_path):
    from eval import costmodel

    assert costmodel.main(TINY + ["--methods", "vanilla,pld:3", "--suite", "qa", "--tokens", "1,2", "--repeats", "1",
                                  "--draft-prompts", "1", "--max-new-tokens", "4", "--out", str(tmp_path)]) == 0
    res = results.load(tmp_path)
    assert list(res.verify_cost.tokens) == [1, 2] and list(res.costmodel.method) == ["vanilla", "pld:3"]
    assert list(res.costmodel.K) == [0, 3] and (tmp_path / "report.md").is_file()


def test_sweep(tmp_path):
    from eval import sweep

    assert sweep.main(TINY + ["--methods", "vanilla,pld:2", "--batch-sizes", "1,2", "--max-new-tokens", "4",
                              "--repeats", "1", "--suite", "qa", "--out", str(tmp_path)]) == 0
    sw = results.load(tmp_path).sweep
    assert len(sw) == 4 and (sw.tau >= 1.0).all() and (tmp_path / "report.md").is_file()
    for _, p in sw.iterrows():
        assert p.tokens_per_s_total == pytest.approx(p.batch_size * p.tokens_per_s_per_seq)


def test_acceptance(tmp_path, heads_dir):
    from eval import acceptance

    assert acceptance.main(TINY + ["--heads", str(heads_dir), "--data", "qa", "--num-prompts", "2",
                                   "--max-new-tokens", "4", "--out", str(tmp_path)]) == 0
    d = json.loads((tmp_path / "acceptance.json").read_text())
    assert d["T=0"]["expected_tau"] >= 1.0 and d["sequences"] == 2
    assert results.load(tmp_path).meta["config"]["heads"] == str(heads_dir)


def test_figures_engine(tmp_path, heads_dir):
    from train import figures

    assert figures.main(["engine", "--model", "tiny-llama", "--family", "medusa", "--heads", str(heads_dir),
                         "--num-prompts", "2", "--max-new-tokens", "5", "--out", str(tmp_path)]) == 0
    check_folder(tmp_path / "engine-medusa", ["vanilla", "medusa"])
    d = json.loads((tmp_path / "engine_tau_medusa.json").read_text())
    assert d["identical_to_plain_greedy"] and d["tau"] >= 1.0 and len(d["prompts"]) == 2


def test_passage_prompts_from_a_base_model_that_never_stops(tmp_path, capsys):
    """train.prompts --passages-from: answers all cut at max_new_tokens give no passage; that is an
    error that says why, or, with --allow-none (what train.demo passes), an empty file and exit 0."""
    from train import prompts

    recs = tmp_path / "distill.jsonl"
    recs.write_text("".join(json.dumps({"prompt_id": f"p{i}", "turn": 0, "prompt_ids": [1, 2, 3],
                                        "response_ids": list(range(5, 69)), "finish_reason": "length"}) + "\n"
                            for i in range(3)))
    argv = ["--model", "tiny-llama", "--passages-from", str(recs), "--num-prompts", "4"]
    assert prompts.main([*argv, "--out", str(tmp_path / "a.jsonl")]) == 2
    assert "no usable passages" in capsys.readouterr().err and not (tmp_path / "a.jsonl").exists()
    assert prompts.main([*argv, "--out", str(tmp_path / "b.jsonl"), "--allow-none"]) == 0
    assert json.loads((tmp_path / "b.jsonl.meta.json").read_text())["kept"] == 0
