"""`python -m train.demo` end to end on tiny-llama (preset tiny): every stage runs, the results
folder and report are written, and a second run skips every finished stage."""
import json

from train import demo


def test_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    extra = tmp_path / "mine.jsonl"  # --prompts: the user's own prompts, answered and trained on too
    extra.write_text("".join(json.dumps({"id": f"m{i}", "turns": [f"Tell me about item {i}."]}) + "\n" for i in range(3)))
    argv = ["--model", "tiny-llama", "--preset", "tiny", "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results"), "--prompts", str(extra)]
    res = tmp_path / "results" / "demo"
    # data and heads only: no benchmark yet
    assert demo.main([*argv, "--until", "train"]) == 0
    assert (tmp_path / "runs" / "demo" / "eagle3" / "best" / "model.safetensors").is_file()
    recs = [json.loads(x) for f in sorted((tmp_path / "runs" / "demo" / "data" / "distill-extra").glob("shard-*.jsonl"))
            for x in f.read_text().splitlines()]
    assert sorted(r["prompt_id"] for r in recs) == ["m0", "m1", "m2"]
    import yaml

    train = yaml.safe_load((tmp_path / "runs" / "demo" / "configs" / "eagle3.yaml").read_text())["data"]["train"]
    assert train.split(",")[-1] == str(tmp_path / "runs" / "demo" / "data" / "distill-extra")
    assert not (res / "t0").exists() and "stopped after training" in capsys.readouterr().err
    assert demo.main(argv) == 0
    for t in ("t0", "t1"):
        s = json.loads((res / t / "summary.json").read_text())
        assert set(s["methods"]) == {"hf", "vanilla", "pld", "eagle3", "adapt+eagle3"}
        assert s["methods"]["eagle3"]["overall"]["num_prompts"] == 2
        if t == "t0":  # greedy: every method's output equals the baseline's
            assert all(e["overall"]["exact_match"] == 1.0 for e in s["methods"].values())
        # the adaptive union's choices per generation, and their shares per method and category
        shares = s["methods"]["adapt+eagle3"]["overall"]["choice_shares"]
        assert set(shares) == {"union", "lookup", "heads", "plain"} and abs(sum(shares.values()) - 1) < 1e-9
        assert s["methods"]["eagle3"]["overall"]["choice_shares"] is None
        samples = [json.loads(x) for x in (res / t / "samples.jsonl").read_text().splitlines()]
        ours = [x for x in samples if x["method"] == "adapt+eagle3"]
        # every decode step is one choice; plain steps draft nothing, so they are not speculative steps
        assert [sum(x["choices"].values()) - x["choices"]["plain"] for x in ours] == [len(x["accept_lengths"]) for x in ours]
        assert all(sum(x["choices"].values()) <= x["target_forwards"] for x in ours)
        assert all("choices" not in x for x in samples if x["method"] != "adapt+eagle3")
    report = (res / "report.md").read_text()
    assert "| tiny-llama | eagle3 |" in report and (res / "acceptance.png").is_file()
    # where the time goes, from the forwards the run timed itself: every kit method, shares in [0, 1]
    assert "## Where the time goes, T=0" in report
    from mtp.report import time_rows

    rows = {r["method"]: r for r in time_rows(res / "t0")}
    assert set(rows) == {"vanilla", "pld", "eagle3", "adapt+eagle3"}  # hf is not the kit's loop: nothing timed
    assert all(0 <= float(r[k]) <= 1 for r in rows.values() for k in ("prefill", "verify", "drafting"))
    assert rows["vanilla"]["drafting"] == "0.00" and rows["vanilla"]["predicted vs vanilla"] == "1.00x"
    assert (tmp_path / "runs" / "demo" / "eagle3" / "best" / "model.safetensors").is_file()
    cfg = json.loads((tmp_path / "runs" / "demo" / "eagle3" / "best" / "config.json").read_text())
    assert cfg["config"]["draft_vocab_size"] == 64
    capsys.readouterr()
    # run again: nothing is retrained or re-measured
    assert demo.main(argv) == 0
    err = capsys.readouterr().err
    assert "is complete, skipped" in err and "heads are trained" in err and "0 to run" in err


def test_preset_sizes_from_the_command_line():
    import argparse

    import pytest

    def ns(**kw):
        base = dict(preset="full", families="hydra", steps=0, self_prompts=None, passage_prompts=None, sampled_answers=None)
        return argparse.Namespace(**{**base, **kw})

    p = demo._preset(ns())
    assert (p.self_prompts, p.passage_prompts, p.steps, p.families) == (1200, 900, 800, ("hydra",))
    p = demo._preset(ns(self_prompts=400, passage_prompts=0, steps=600))
    assert (p.self_prompts, p.passage_prompts, p.steps) == (400, 0, 600)
    assert p.lr == demo.PRESETS["full"].lr  # the rest of the preset is kept
    assert not p.sampled_answers and demo._preset(ns(sampled_answers=True)).sampled_answers
    assert demo.PRESETS["gpu"].sampled_answers
    with pytest.raises(SystemExit, match="--passage-prompts must be >= 0"):
        demo._preset(ns(passage_prompts=-1))


def test_families_reading_the_same_layers_share_one_cache(tmp_path, capsys):
    """Hydra and Medusa both read the last layer: the second trains from the first's cache (no
    second cache is built), EAGLE-3 reads three layers and gets its own."""
    import yaml

    argv = ["--model", "tiny-llama", "--preset", "tiny", "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results"), "--families", "hydra,medusa,eagle3", "--until", "train"]
    assert demo.main(argv) == 0
    runs = tmp_path / "runs" / "demo"
    caches = {fam: yaml.safe_load((runs / "configs" / f"{fam}.yaml").read_text())["data"]["cache"]
              for fam in ("hydra", "medusa", "eagle3")}
    assert caches == {"hydra": str(runs / "data" / "cache-hydra"), "medusa": str(runs / "data" / "cache-hydra"),
                      "eagle3": str(runs / "data" / "cache-eagle3")}
    assert not (runs / "data" / "cache-medusa").exists()
    assert "cache-hydra holds its layers for the same data, reused" in capsys.readouterr().err
    assert all((runs / fam / "best" / "model.safetensors").is_file() for fam in caches)


def test_full_preset_benchmarks_each_family_as_chain_and_tree(tmp_path, monkeypatch):
    """The full preset reports every family's best drafting shape: its chain (:auto) and its tree."""
    from pathlib import Path

    calls = []
    monkeypatch.setattr(demo, "_call", lambda module, argv: calls.append((module, argv)))
    heads = {"hydra": Path("runs/x/hydra/best"), "eagle3": Path("runs/x/eagle3/best")}
    demo.stage_bench("smollm2-135m", demo.PRESETS["full"], heads, tmp_path, "spec", 6)
    assert [m for m, _ in calls] == ["eval.bench", "eval.bench"]  # T=0 and T=1
    for _, argv in calls:
        methods = argv[argv.index("--methods") + 1].split(",")
        assert methods[:3] == ["hf", "vanilla", "pld"]
        greedy = argv[argv.index("--temperature") + 1] == "0.0"
        for fam, path in heads.items():
            # the union over the head's tree at T=0, over its sampled chain at T>0
            union = f"adapt+{fam}=adapt+heads:{path}" + (":3:tree16" if greedy else ":auto")
            assert {f"{fam}=heads:{path}:auto", f"{fam}-tree=heads:{path}:3:tree16", union} <= set(methods)
            assert sum(m.startswith(f"adapt+{fam}=") for m in methods) == 1
    calls.clear()
    demo.stage_bench("smollm2-135m", demo.PRESETS["quick"], heads, tmp_path, "spec", 6)
    assert not any(m.split("=")[0].endswith("-tree") for _, argv in calls for m in argv[argv.index("--methods") + 1].split(","))


def test_a_run_trained_with_another_recipe_is_moved_aside(tmp_path, capsys):
    """Run again with other --steps (or after a preset changed), the demo cannot resume the old run:
    it moves it to <family>-<step>-steps, heads intact, and trains afresh."""
    argv = ["--model", "tiny-llama", "--preset", "tiny", "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results"), "--families", "hydra", "--until", "train"]
    runs = tmp_path / "runs" / "demo"
    assert demo.main(argv) == 0
    old = (runs / "hydra" / "best" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert demo.main([*argv, "--steps", "8"]) == 0
    err = capsys.readouterr().err
    assert "was trained with another recipe (differs in optim.max_steps" in err
    assert (runs / "hydra-6-steps" / "best" / "model.safetensors").read_bytes() == old
    assert json.loads((runs / "hydra" / "final.json").read_text())["step"] == 8
    # the same recipe again: nothing moved, nothing retrained
    assert demo.main([*argv, "--steps", "8"]) == 0
    err = capsys.readouterr().err
    assert "heads are trained" in err and "another recipe" not in err
    assert sorted(d.name for d in runs.iterdir() if d.name.startswith("hydra")) == ["hydra", "hydra-6-steps"]
    # a run that stopped early (no final.json) is named by its latest checkpoint, of the steps it was asked for
    (runs / "hydra" / "final.json").unlink()
    (runs / "hydra" / "checkpoints" / "latest").write_text("step-0000003\n")
    assert demo.main([*argv, "--steps", "7"]) == 0
    assert "moved to" in capsys.readouterr().err
    assert (runs / "hydra-3-of-8-steps" / "best").is_dir()
    assert json.loads((runs / "hydra" / "final.json").read_text())["step"] == 7


def test_sampled_answers_are_distilled_and_trained_on(tmp_path, capsys):
    """--sampled-answers: the same prompts (the same seeded shuffle) answered again at T=1, in
    distill-t1 beside the greedy answers, and both in the heads' training data."""
    import yaml

    argv = ["--model", "tiny-llama", "--preset", "tiny", "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results"), "--families", "hydra", "--until", "train", "--sampled-answers"]
    assert demo.main(argv) == 0
    data = tmp_path / "runs" / "demo" / "data"

    def records(name):
        return {(r["prompt_id"], r.get("turn", 0)): r for f in sorted((data / name).glob("shard-*.jsonl"))
                for r in map(json.loads, f.read_text().splitlines())}

    greedy, sampled = records("distill"), records("distill-t1")
    assert len(greedy) >= 24 and set(sampled) == set(greedy)  # 24 prompts, some with two turns
    assert json.loads((data / "distill-t1" / "meta.json").read_text())["temperature"] == 1.0
    assert sum(sampled[k]["response_ids"] != greedy[k]["response_ids"] for k in greedy) > 12  # sampled, not greedy
    train = yaml.safe_load((tmp_path / "runs" / "demo" / "configs" / "hydra.yaml").read_text())["data"]["train"]
    assert train.split(",") == [str(data / "distill"), str(data / "distill-t1")]
    assert "sampled at T=1" in capsys.readouterr().err
