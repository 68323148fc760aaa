"""Figures for the training pipeline on a real model (each step short; results as JSON in --out).

    python -m train.figures distill   # self-distillation tokens/s: raw HF batched generate vs the pipeline
    python -m train.figures cache     # one hidden-state cache holding every family's layers
    python -m train.figures budget    # every family trained for the same fixed budget (recipes smollm2-*.yaml)
    python -m train.figures speed     # training tokens/s per family, online vs cache
    python -m train.figures engine    # measured tau for the best family (a results folder, mtp.bench.SuiteRun)
Each takes --model (tiny-llama for a smoke run).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import torch

from mtp.cli import cli_main
from mtp.io import atomic_write_json, jsonable

FAMILIES = ["medusa", "parallel", "hydra", "deepseek", "eagle", "eagle3"]
DATA = "runs/data/distill-smollm2"
CACHE = "runs/data/cache-smollm2"


def _write(out: Path, name: str, obj) -> None:
    atomic_write_json(out / f"{name}.json", obj)
    print(json.dumps(jsonable(obj)))


def fig_distill(out: Path, model_name: str = "smollm2-135m", n: int = 32, bs: int = 16, new: int = 32) -> None:
    from mtp.data import DistillConfig, distill, load_prompts
    from mtp.chat import encode_chat as apply_template
    from mtp.data.distill import _generate_hf
    from mtp.models import load_model

    model, tok = load_model(model_name, dtype="bf16")
    prompts = load_prompts("builtin")
    random.Random(1).shuffle(prompts)
    prompts = [p for p in prompts if len(p.turns) == 1][:n]
    rows = [apply_template(tok, [{"role": "user", "content": p.turns[0]}]) for p in prompts]
    cfg = DistillConfig(max_new_tokens=new, batch_size=bs)
    _generate_hf(model, tok, rows[:4], DistillConfig(max_new_tokens=4), 0)  # warm-up
    res = {"model": model_name, "dtype": "bf16", "prompts": n, "batch_size": bs, "max_new_tokens": new,
           "greedy": True, "threads": torch.get_num_threads(), "load_avg_start": os.getloadavg()[0]}
    t0, toks = time.perf_counter(), 0
    for b in range(0, n, bs):  # raw HF batched generate, no pipeline around it
        toks += sum(len(r) for r in _generate_hf(model, tok, rows[b: b + bs], cfg, 0))
    res["hf_generate_tok_s"] = toks / (time.perf_counter() - t0)
    for backend in ("hf", "engine"):
        d = out / f"distill-{backend}"
        if d.exists():
            import shutil

            shutil.rmtree(d)
        st = distill(model, tok, prompts, d, DistillConfig(max_new_tokens=new, batch_size=bs, backend=backend),
                     progress=False)
        res[f"pipeline_{backend}_tok_s"] = st["tokens_per_s"]
    res["load_avg_end"] = os.getloadavg()[0]
    _write(out, "distill_throughput", res)


def _cfg(family: str, *over: str):
    from mtp.training import load_config

    return load_config(f"train/configs/smollm2-{family}.yaml", list(over))


def fig_cache(out: Path, model_name: str = "smollm2-135m") -> None:
    from mtp.data import load_examples
    from mtp.data.cache import HiddenStateCache, build_cache
    from mtp.models import load_model
    from mtp.training.trainer import build_head_for

    target, tok = load_model(model_name, dtype="fp32")
    layers: set[int] = set()
    for f in FAMILIES:
        layers |= set(build_head_for(_cfg(f), target, torch.ones(target.config.vocab_size)).config.hidden_layers)
    cfg = _cfg("medusa")
    ex = load_examples(cfg.data.train, tok, max_seq_len=cfg.data.max_seq_len, vocab_size=target.config.vocab_size)
    meta = build_cache(target, ex, sorted(layers), CACHE, dtype="bf16", topk=32, batch_size=8)
    size = HiddenStateCache(CACHE).size_bytes()
    per_layer = target.config.hidden_size * 2 + 32 * 8  # bf16 hidden state + top-32 (id, prob)
    _write(out, "cache", {"layers": meta["layers"], "tokens": meta["tokens"], "bytes": size,
                          "MiB_per_M_tokens": size / meta["tokens"] * 1e6 / 2**20,
                          "MiB_per_M_tokens_one_layer_bf16_top32": per_layer * 1e6 / 2**20,
                          "build_s": meta["build_seconds"], "build_tok_s": meta["tokens"] / meta["build_seconds"]})


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def fig_budget(out: Path, families: list[str], steps: int, tag: str = "") -> None:
    from mtp.training import train

    res = {}
    for f in families:
        cfg = _cfg(f, f"data.cache={CACHE}", f"optim.max_steps={steps}", "log.progress=false", "log.wandb=offline",
                   f"name=fig{tag}-{f}")
        t0 = time.perf_counter()
        state = train(cfg)
        ev = [r for r in _metrics(cfg.run_dir) if "eval/expected_tau" in r]
        last = ev[-1]
        res[f] = {"steps": state["step"], "seconds": time.perf_counter() - t0, "best_tau": state["best_tau"],
                  "eval_expected_tau": last["eval/expected_tau"],
                  "eval_top1": [last[f"eval/top1_{j}"] for j in range(3)],
                  "eval_ce": [last[f"eval/ce_{j}"] for j in range(3)], "run_dir": str(cfg.run_dir)}
        print(f, json.dumps(res[f]), flush=True)
        _write(out, f"budget{tag}", res)


def fig_speed(out: Path, families: list[str], steps: int = 6) -> None:
    from mtp.training import train

    res = {}
    for f in families:
        res[f] = {}
        for mode in ("online", "cache"):
            over = ["log.every=1", "eval.every=0", "eval.max_batches=1", "ckpt.every=0", "log.progress=false",
                    "log.wandb=disabled", f"optim.max_steps={steps}", f"name=speed-{f}-{mode}", "out_dir=runs/speed"]
            if mode == "cache":
                over.append(f"data.cache={CACHE}")
            cfg = _cfg(f, *over)
            import shutil

            shutil.rmtree(cfg.run_dir, ignore_errors=True)
            train(cfg)
            tps = [r["train/tokens_per_s"] for r in _metrics(cfg.run_dir) if "train/tokens_per_s" in r][1:]
            res[f][mode] = sum(tps) / len(tps)
        print(f, res[f], flush=True)
        _write(out, "train_speed", res)


def fig_engine(out: Path, family: str, model_name: str = "smollm2-135m", heads: str | None = None, n: int = 4,
               new: int = 48, tag: str = "") -> None:
    """Measured tau of a head family: plain decoding vs the heads through the one runner
    (mtp.bench.SuiteRun, interleaved, greedy) on held-out builtin prompts, into the results folder
    out/engine{tag}-{family}; the speculative output must equal plain decoding."""
    from mtp import results
    from mtp.bench import KitMethod, SuiteRun
    from mtp.data import Prompt, load_prompts
    from mtp.heads import load_heads
    from mtp.models import load_model
    from mtp.runinfo import collect_meta

    model, tok = load_model(model_name, dtype="fp32")
    ckpt = heads or f"runs/fig{tag}-{family}/best"
    head = load_heads(ckpt, model)
    done = {json.loads(x)["prompt_id"] for f in Path(DATA).glob("shard-*.jsonl") for x in f.read_text().splitlines()}
    prompts = [p for p in load_prompts("builtin") if p.id not in done and len(p.turns) == 1]
    random.Random(2).shuffle(prompts)
    items = [Prompt(id=p.id, turns=list(p.turns), category=p.category or "chat") for p in prompts[:n]]
    folder = out / f"engine{tag}-{family}"
    config = {"model": model_name, "checkpoint": ckpt, "max_new_tokens": new, "temperature": 0.0, "repeats": 1,
              "suite": "builtin (held out)", "title": f"Engine tau: {family} on {model_name}"}
    results.check_resume(folder, config, (), overwrite=True)
    atomic_write_json(folder / "meta.json", collect_meta(config, model))
    bench = SuiteRun(folder, [KitMethod("vanilla", model, tok), KitMethod(family, model, tok, head.as_drafter())],
                     items, tok, repeats=1, warmup=1, max_new_tokens=new)
    bench.run()
    summary = bench.finalize(model, baseline="vanilla")
    o, plain = summary["methods"][family]["overall"], summary["methods"]["vanilla"]["overall"]
    if o["exact_match"] != 1.0:
        raise RuntimeError(f"greedy speculative output differs from plain decoding: {summary['mismatches'][:3]}")
    per_prompt = [{"id": s["prompt_id"], "tau": results.spec_stats([s]).tau, "tokens": s["new_tokens"]}
                  for s in bench.samples if s["method"] == family]
    _write(out, f"engine_tau{tag}_{family}", {
        "family": family, "checkpoint": ckpt, "results": str(folder), "prompts": per_prompt, "max_new_tokens": new,
        "greedy": True, "tau": o["tau"], "per_position_acceptance": o["accept_rate_per_position"],
        "accept_length_histogram": o["accept_length_histogram"], "plain_tok_s": plain["tokens_per_s"],
        "spec_tok_s": o["tokens_per_s"], "identical_to_plain_greedy": True})


@cli_main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["distill", "cache", "budget", "speed", "engine"])
    ap.add_argument("--model", default="smollm2-135m", help="target (distill, cache, engine; budget and speed: "
                                                            "the recipes' own)")
    ap.add_argument("--families", nargs="*", default=FAMILIES)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--family", default="")
    ap.add_argument("--heads", default=None, help="engine: heads checkpoint (default runs/fig<tag>-<family>/best)")
    ap.add_argument("--num-prompts", type=int, default=4, help="engine: prompts")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="engine: new tokens per prompt")
    ap.add_argument("--out", default="runs/figures")
    ap.add_argument("--tag", default="", help="suffix of run names / result files (e.g. -long)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    if a.what == "distill":
        fig_distill(out, a.model)
    elif a.what == "cache":
        fig_cache(out, a.model)
    elif a.what == "budget":
        fig_budget(out, a.families, a.steps, a.tag)
    elif a.what == "speed":
        fig_speed(out, a.families, a.steps)
    else:
        family = a.family
        if not family:  # the best family of the fixed-budget comparison
            b = json.loads((out / f"budget{a.tag}.json").read_text())
            family = max(b, key=lambda f: b[f]["eval_expected_tau"])
        fig_engine(out, family, a.model, a.heads, a.num_prompts, a.max_new_tokens, a.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
