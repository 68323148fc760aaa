"""The kit's main job in one command: self-distil, train heads, measure them next to the baselines.

    python -m train.demo [--model smollm2-135m] [--preset quick|full|gpu|tiny] [--families eagle3,...]
    make demo                      # the same, after all set-up (MODEL=gemma3-270m make demo, PRESET=full ...)
    python -m train.demo --until train   # data and heads only (benchmark later, on a quiet machine)
    python -m train.demo --preset full --families hydra --self-prompts 400 --passage-prompts 400 --steps 600
    #                                    a preset resized from the command line

Stages (each is also a command of its own, printed as it runs, and skipped when already done, so a
killed demo run again picks up where it stopped):
  1. prompts  python -m train.prompts   the target writes user turns itself (Magpie), deduplicated
  2. distill  python -m train.distill   the target answers them (and the built-in set), greedy; then
              python -m train.prompts --passages-from   passage tasks (summarise, RAG, translate, ...)
              built from those answers, which the target answers too (mtp.data.passages);
              with --sampled-answers (the gpu preset) all of them answered again, sampled at T=1
  3. cache    python -m train.cache     hidden states + top-k logits the heads train on
  4. train    python -m train.heads     one run per family; best/ chosen on held-out distilled data
  5. bench    python -m eval.bench      hf, vanilla, pld and every head, at T=0 and T=1, kit's suite
  6. report   results/<name>/report.md  one table (tau, a_k, speedup at T=0 / T=1), plots
Folders: runs/<name>/data (prompts, distillation, caches), runs/<name>/<family>/best (heads),
results/<name>/{t0,t1} (eval.bench folders) and results/<name>/report.md. The evaluation suite is
never used for training or for choosing checkpoints.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

# ------------------------------------------------------------------------------------------------
# Presets: sized for 2 CPU cores (quick: ~25 min after install) or one GPU (gpu).
# ------------------------------------------------------------------------------------------------


@dataclass
class Preset:
    self_prompts: int = 0  # self-written prompts added to the built-in set (0: built-in only)
    openers: str = "default"  # train.prompts --openers: batches start with task verbs / question words
    passage_prompts: int = 0  # passage tasks built from the distilled answers, then distilled too (0: none)
    builtin_prompts: int = 0  # 0: all 438
    max_new_tokens: int = 128  # distillation response length
    distill_batch: int = 32
    families: tuple[str, ...] = ("eagle3",)
    num_heads: int = 3  # unrolled training steps (EAGLE-3's training-time test) / heads
    draft_vocab: int = 8192  # reduced draft vocabulary (families that support it)
    max_seq_len: int = 512
    batch_size: int = 8
    steps: int = 300
    lr: float = 1e-3
    eval_every: int = 100
    mixed_precision: str = "bf16"
    bench_prompts: int | None = 6  # category-balanced subset of the suite at T=0 (None: all 72)
    bench_prompts_sampled: int | None = 6  # the same at T>0
    bench_repeats: int = 1
    bench_tokens: int = 128
    temperatures: tuple[float, ...] = (0.0, 1.0)
    draft_tokens: int = 0  # chain length at decode (0: chosen by the cost model, heads:<dir>:auto)
    union_tree: int = 16  # adapt+<family>: lookup's chain grafted into the head's tree of this many nodes
    tree_depth: int = 3  # depth of those trees (at most num_heads)
    bench_trees: bool = False  # also benchmark each family's tree alone (<family>-tree), to report its best shape
    # also train on the same prompts answered again at T=1 (sampled): on the quick preset's data,
    # held-out expected tau at T=1 1.448 -> 1.488 and none at T=0 at 400 steps; at 800 steps 1.458 ->
    # 1.509 at T=1 and 1.790 -> 1.811 at T=0. It doubles the distillation and the cache, so the quick
    # preset leaves it out (docs/results/r21)
    sampled_answers: bool = False
    dtype: str = "bf16"  # target dtype for distillation and benchmarks
    # target dtype for the hidden-state cache and training; fp32 keeps the head's weights (built in the
    # target's dtype) and AdamW's updates in fp32, with bf16 autocast doing the compute
    target_dtype: str = "fp32"


PRESETS = {
    # ~25 minutes after install on 2 CPU cores (smollm2-135m)
    # (320 of the 438 built-in prompts plus 120 passage tasks built from their answers). Hydra: on the
    # same data and steps it trained in 3.1 min against EAGLE-3's 6.0, held-out expected tau 1.76
    # against 1.62, and its union spent 9% of its time drafting against 15% (results/demo-hq).
    # 400 steps at lr 2e-3: on the 118 built-in prompts the preset leaves out, held-out expected tau
    # 1.77 against 1.68 for 220 steps at 1e-3 (1.75 for 400 at 1e-3; 1.79 for 600 or 800 at 2e-3, over
    # the 25-minute budget); weight decay and feature noise added nothing (docs/results/r20)
    "quick": Preset(builtin_prompts=320, passage_prompts=120, families=("hydra",), steps=400, lr=2e-3, eval_every=200),
    # the README table: every family, more data and steps (hours on CPU)
    "full": Preset(self_prompts=1200, passage_prompts=900, families=("eagle3", "eagle", "hydra", "medusa", "parallel", "deepseek"),
                   num_heads=4, steps=800, eval_every=200, lr=6e-4, bench_prompts=48, bench_prompts_sampled=24,
                   bench_trees=True),
    # one GPU: 10x the CPU data, minutes
    "gpu": Preset(self_prompts=12000, passage_prompts=6000, distill_batch=256, num_heads=5, steps=4000, batch_size=32, eval_every=500,
                  bench_prompts=None, bench_prompts_sampled=None, bench_repeats=3, sampled_answers=True),
    # tests: tiny-llama, seconds
    "tiny": Preset(builtin_prompts=24, max_new_tokens=16, distill_batch=8, num_heads=2, draft_vocab=64,
                   max_seq_len=128, batch_size=4, steps=6, eval_every=3, mixed_precision="no", bench_prompts=2, bench_prompts_sampled=2,
                   bench_tokens=12, dtype="fp32"),
}

# Per-family head arguments on top of num_heads: every family drafts over the preset's reduced
# vocabulary (EAGLE-3's own LM head; FR-Spec rows of the shared LM head for the others).
FAMILY_ARGS = {family: (lambda p: {"draft_vocab_size": p.draft_vocab})
               for family in ("eagle3", "eagle", "hydra", "medusa", "parallel", "deepseek")}


def _stage(i: int, n: int, name: str, cmd: list[str]) -> float:
    print(f"\n[demo] stage {i}/{n}: {name}\n[demo]   $ python -m {' '.join(cmd)}", file=sys.stderr, flush=True)
    return time.perf_counter()


def _done(t0: float, what: str = "") -> None:
    print(f"[demo]   done in {time.perf_counter() - t0:.0f} s{(' ' + what) if what else ''}", file=sys.stderr, flush=True)


def _call(module: str, argv: list[str]) -> None:
    import importlib

    saved = sys.argv
    sys.argv = [f"python -m {module}", *argv]  # what results' meta.json records as the command
    try:
        rc = importlib.import_module(module).main(argv)
    finally:
        sys.argv = saved
    if rc not in (0, None):
        raise SystemExit(f"[demo] `python -m {module} {' '.join(argv)}` failed with exit code {rc}; fix the error "
                         "above and run the demo again (finished stages are skipped)")


def recipe(model: str, family: str, p: Preset, data: Path | str, cache: Path, runs: Path) -> dict:
    args = {"num_heads": p.num_heads, **FAMILY_ARGS.get(family, lambda _: {})(p)}
    return {
        "name": family, "out_dir": str(runs), "seed": 0, "mixed_precision": p.mixed_precision,
        "model": {"name": model, "dtype": p.target_dtype},
        "head": {"family": family, "args": args},
        "data": {"train": str(data), "eval_fraction": 0.05, "max_seq_len": p.max_seq_len, "batch_size": p.batch_size,
                 "cache": str(cache)},
        "loss": {"ce_weight": 1.0, "kl_weight": 1.0, "kl_topk": 32, "position_weights": "family"},
        "optim": {"lr": p.lr, "weight_decay": 0.0, "warmup_steps": max(1, p.steps // 20), "max_steps": p.steps,
                  "grad_accum": 1, "grad_clip": 1.0},
        "eval": {"every": p.eval_every, "max_batches": 0, "topk": 5},
        "ckpt": {"every": p.eval_every, "keep": 2},
        "log": {"wandb": "", "every": 10, "progress": True},
    }


def run(a: argparse.Namespace) -> int:
    p = _preset(a)
    runs, results = Path(a.runs) / a.name, Path(a.results) / a.name
    data = runs / "data"
    data.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    n = 4 + len(p.temperatures)
    prompts = stage_prompts(a.model, p, data, n)
    train_data = stage_distill(a.model, p, data, prompts, n)
    if a.prompts:
        train_data += "," + stage_extra(a.model, p, data, a.prompts, n)
    heads = {fam: stage_train(a.model, fam, p, train_data, runs, n) for fam in p.families}
    if a.until == "train":
        print(f"[demo] stopped after training (--until train): heads in {runs}/<family>/best; run again "
              "without --until to benchmark them (finished stages are skipped)", file=sys.stderr)
        return 0
    stage_bench(a.model, p, heads, results, a.suite, n)
    from mtp.report import demo_report

    print(demo_report(results, runs, model=a.model, preset=a.preset))
    print(f"[demo] finished in {(time.perf_counter() - t_all) / 60:.1f} min: heads in {runs}/<family>/best, "
          f"results in {results}", file=sys.stderr)
    return 0


def _preset(a: argparse.Namespace) -> Preset:
    p = PRESETS[a.preset]
    for flag in ("steps", "self_prompts", "passage_prompts"):
        if (getattr(a, flag) or 0) < 0:
            raise SystemExit(f"error: --{flag.replace('_', '-')} must be >= 0, got {getattr(a, flag)}")
    if a.families:
        p = replace(p, families=tuple(f.strip() for f in a.families.split(",") if f.strip()))
    if a.steps:
        p = replace(p, steps=a.steps)
    if a.self_prompts is not None:
        p = replace(p, self_prompts=a.self_prompts)
    if a.passage_prompts is not None:
        p = replace(p, passage_prompts=a.passage_prompts)
    if a.sampled_answers is not None:
        p = replace(p, sampled_answers=a.sampled_answers)
    from mtp.heads import list_families

    unknown = [f for f in p.families if f not in list_families()]
    if unknown:
        raise SystemExit(f"error: unknown head families {unknown}; known: {list_families()}")
    return p


def stage_prompts(model: str, p: Preset, data: Path, n: int) -> str:
    """1. Self-written prompts (when the preset asks for them); returns the distillation's --prompts."""
    if not p.self_prompts:
        print("[demo] stage 1: no self-written prompts in this preset (built-in set only)", file=sys.stderr)
        return "builtin"
    cmd = ["--model", model, "--out", str(data / "prompts.jsonl"), "--num-prompts", str(p.self_prompts),
           "--batch-size", "32", "--dtype", p.dtype] + (["--openers", p.openers] if p.openers else [])
    t0 = _stage(1, n, "self-written prompts", ["train.prompts", *cmd])
    _call("train.prompts", cmd)
    _done(t0)
    return f"builtin,{data / 'prompts.jsonl'}"


def _distill_args(p: Preset) -> list[str]:
    """train.distill's generation arguments for the preset (every distillation the demo runs)."""
    return ["--batch-size", str(p.distill_batch), "--max-new-tokens", str(p.max_new_tokens), "--dtype", p.dtype,
            "--on-long-prompt", "skip"]


def stage_distill(model: str, p: Preset, data: Path, prompts: str, n: int) -> str:
    """2. Self-distillation, then passage tasks built from its answers and distilled in turn, then
    (sampled_answers) the same prompts answered again at T=1; returns the training data
    (distillation folders joined by commas)."""
    gen = _distill_args(p)
    first = ["--prompts", prompts, "--shuffle"] + (["--num-prompts", str(p.builtin_prompts)] if p.builtin_prompts else [])
    cmd = ["--model", model, *first, "--out", str(data / "distill"), *gen]
    t0 = _stage(2, n, "self-distillation (greedy)", ["train.distill", *cmd])
    _call("train.distill", cmd)
    _done(t0)
    sets = [("distill", first)]  # (folder, the prompts it answers)
    if p.passage_prompts:
        qfile = data / "passages.jsonl"
        cmd = ["--model", model, "--out", str(qfile), "--num-prompts", str(p.passage_prompts),
               "--passages-from", str(data / "distill"), "--questions", prompts, "--dtype", p.dtype, "--allow-none"]
        t0 = _stage(2, n, "passage tasks from the distilled answers", ["train.prompts", *cmd])
        _call("train.prompts", cmd)
        if json.loads(qfile.with_name(qfile.name + ".meta.json").read_text()).get("kept"):
            cmd = ["--model", model, "--prompts", str(qfile), "--out", str(data / "distill-passages"), *gen]
            print(f"[demo]   $ python -m train.distill {' '.join(cmd)}", file=sys.stderr, flush=True)
            _call("train.distill", cmd)
            sets.append(("distill-passages", ["--prompts", str(qfile)]))
        else:
            print("[demo]   no usable passages in the model's answers (cut at max_new_tokens or looping, as a base "
                  "model's are): training on the distilled answers only", file=sys.stderr)
        _done(t0)
    folders = [str(data / name) for name, _ in sets]
    if p.sampled_answers:  # the same prompts (the same seeded shuffle) answered again, sampled at T=1
        for name, args in sets:
            cmd = ["--model", model, *args, "--out", str(data / f"{name}-t1"), *gen, "--temperature", "1.0"]
            t0 = _stage(2, n, f"the same prompts answered again, sampled at T=1 ({name}-t1)", ["train.distill", *cmd])
            _call("train.distill", cmd)
            _done(t0)
            folders.append(str(data / f"{name}-t1"))
    return ",".join(folders)


def stage_extra(model: str, p: Preset, data: Path, prompts: str, n: int) -> str:
    """2b. The target's answers to the user's own prompt files (--prompts), added to the training
    data; returns their distillation folder."""
    out = data / "distill-extra"
    cmd = ["--model", model, "--prompts", prompts, "--out", str(out), *_distill_args(p)]
    t0 = _stage(2, n, f"self-distillation of {prompts} (--prompts)", ["train.distill", *cmd])
    _call("train.distill", cmd)
    _done(t0)
    return str(out)


def _set_aside_other_recipe(cfg_path: Path) -> None:
    """A run folder trained with another recipe (an older preset, other --steps) cannot be resumed
    with this one: rename it to <name>-<its steps>-steps (a finished run) or
    <name>-<latest checkpoint's step>-of-<its max_steps>-steps (one that stopped early), keeping its
    heads, and train afresh."""
    from mtp.training import load_config
    from mtp.training.checkpointing import saved_config_diff

    cfg = load_config(cfg_path)
    diff = saved_config_diff(cfg)
    if not diff:
        return
    run = cfg.run_dir
    final, latest = run / "final.json", run / "checkpoints" / "latest"
    if final.is_file():
        steps = f"{json.loads(final.read_text()).get('step')}"
    else:  # stopped early: how far it got (its latest checkpoint, "step-0000200"), of how many asked
        m = re.fullmatch(r"step-(\d+)", latest.read_text().strip()) if latest.is_file() else None
        done = int(m[1]) if m else 0
        asked = json.loads((run / "config.json").read_text()).get("optim", {}).get("max_steps", "?")
        steps = f"{done}-of-{asked}"
    dest, i = run.with_name(f"{run.name}-{steps}-steps"), 1
    while dest.exists():
        dest, i = run.with_name(f"{run.name}-{steps}-steps.{i}"), i + 1
    run.rename(dest)
    print(f"[demo] {run} was trained with another recipe (differs in {', '.join(diff)}): moved to {dest}; "
          "training afresh", file=sys.stderr)


def stage_train(model: str, fam: str, p: Preset, train_data: str, runs: Path, n: int) -> Path:
    """3-4. The family's hidden-state cache and training run (each skipped when done); returns best/."""
    import yaml

    from mtp.io import atomic_write_text

    data = runs / "data"
    cfg_path = runs / "configs" / f"{fam}.yaml"
    cache = data / f"cache-{fam}"
    atomic_write_text(cfg_path, yaml.safe_dump(recipe(model, fam, p, train_data, cache, runs), sort_keys=False))
    examples = _examples_key(cfg_path)  # read once: every cache below is checked against it
    shared = None if _cache_ready(cache, examples) else _shared_cache(fam, model, p.dtype, data, examples)
    if shared is not None:
        # another family's cache holds this family's layers for the same data: train from it
        cache = shared
        atomic_write_text(cfg_path, yaml.safe_dump(recipe(model, fam, p, train_data, cache, runs), sort_keys=False))
        print(f"[demo] stage 3/{n}: cache for {fam}: {cache} holds its layers for the same data, reused",
              file=sys.stderr)
    elif _cache_ready(cache, examples):
        print(f"[demo] stage 3/{n}: cache for {fam}: {cache} is complete, skipped", file=sys.stderr)
    else:
        # the target runs in the benchmark's dtype here: on CPU bf16 builds the cache 1.9x faster than
        # fp32 (the recipe's model.dtype, kept for the head's weights), and these are the hidden
        # states the heads see at decode time
        cmd = ["--config", str(cfg_path), "--out", str(cache), "--model-dtype", p.dtype, "data.cache="]
        t0 = _stage(3, n, f"hidden-state cache for {fam}", ["train.cache", *cmd])
        _call("train.cache", cmd)
        _done(t0)
    _set_aside_other_recipe(cfg_path)
    best = runs / fam / "best"
    final = runs / fam / "final.json"
    if final.is_file() and json.loads(final.read_text()).get("step") == p.steps and best.is_dir():
        print(f"[demo] stage 4/{n}: {fam} heads are trained ({best}), skipped", file=sys.stderr)
    else:
        cmd = ["--config", str(cfg_path), "--resume"]
        t0 = _stage(4, n, f"train {fam} heads", ["train.heads", *cmd])
        _call("train.heads", cmd)
        _done(t0)
    return best


def stage_bench(model: str, p: Preset, heads: dict[str, Path], results: Path, suite: str, n: int) -> None:
    """5. hf, vanilla, pld, every head (chain length from the cost model unless the preset fixes
    it; with bench_trees also its dynamic tree) and adapt+head (the union over the head's tree at
    T = 0, over its sampled chain at T > 0), at each temperature; one eval.bench folder per
    temperature."""
    k = f":{p.draft_tokens}" if p.draft_tokens else ":auto"
    methods = ["hf", "vanilla", "pld"] + [f"{fam}=heads:{path}{k}" for fam, path in heads.items()]
    # the head's dynamic tree with prompt lookup's chain grafted in, one verify for both, where that is
    # predicted fastest from the acceptance seen so far and this machine's verify-cost curve; lookup's
    # chain alone, the head's tree alone or a plain one-token step where one of those is
    # (mtp.drafters.AdaptiveUnionDrafter). It replaced union+<family> (always both) here: 1.57x
    # against 1.46x in round 8's quick demo, which ran both and took 25.6 min
    tree = f":{min(p.tree_depth, p.num_heads)}:tree{p.union_tree}"
    if p.bench_trees:  # each family's best drafting shape, chain or tree
        methods += [f"{fam}-tree=heads:{path}{tree}" for fam, path in heads.items()]
    for i, temp in enumerate(p.temperatures):
        # at T > 0 the union drafts with the head's sampled chain (verified against its q), not its
        # top-k tree: round 22 (docs/results/r22), 18 and 24 sampled prompts, the demo's Hydra head
        shape = tree if temp == 0 else k
        union = [f"adapt+{fam}=adapt+heads:{path}{shape}" for fam, path in heads.items()]
        cmd = ["--model", model, "--dtype", p.dtype, "--methods", ",".join(methods + union), "--suite", suite,
               "--temperature", str(temp), "--max-new-tokens", str(p.bench_tokens), "--repeats", str(p.bench_repeats),
               "--out", str(results / f"t{temp:g}")]
        subset = p.bench_prompts if temp == 0 else p.bench_prompts_sampled
        if subset:
            cmd += ["--num-prompts", str(subset)]
        t0 = _stage(5 + i, n, f"benchmark at T={temp:g}", ["eval.bench", *cmd])
        _call("eval.bench", cmd)
        _done(t0)


def _shared_cache(fam: str, model: str, dtype: str, data: Path, examples: tuple | None) -> Path | None:
    """A complete cache in data/ (another family's) built from the same examples, model and dtype
    whose layers include every layer `fam` reads, or None. Hydra, Medusa, parallel heads, EAGLE and
    DeepSeek MTP all read the last layer: the full preset builds that cache once, not five times."""
    from mtp.data.cache import normalize_layer
    from mtp.heads import HEAD_FAMILIES
    from mtp.models.device import resolve_dtype

    cls = HEAD_FAMILIES[fam]
    for cand in sorted(data.glob("cache-*")):
        meta = cand / "meta.json"
        if not meta.is_file():
            continue
        m = json.loads(meta.read_text())
        if m.get("model") != model or "num_layers" not in m or "model_dtype" not in m:
            continue
        if resolve_dtype(m["model_dtype"]) != resolve_dtype(dtype):
            continue
        n_layers = int(m["num_layers"])
        need = {normalize_layer(x, n_layers) for x in cls.resolve_hidden_layers(cls.config_class(), n_layers)}
        if need <= set(m.get("layers", ())) and _cache_ready(cand, examples):
            return cand
    return None


def _examples_key(cfg_path: Path) -> tuple | None:
    """(number, digest) of the recipe's training examples, as a cache's meta.json records them;
    None when they cannot be read."""
    import yaml

    from mtp.data.dataset import examples_digest, load_examples

    cfg = yaml.safe_load(cfg_path.read_text())
    try:
        ex = load_examples(cfg["data"]["train"], None, max_seq_len=cfg["data"]["max_seq_len"])
    except Exception:
        return None
    return len(ex), examples_digest(ex)


def _cache_ready(cache: Path, examples: tuple | None) -> bool:
    """The cache exists and was built from these examples (`_examples_key`: count and digest)."""
    if examples is None or not (cache / "meta.json").is_file():
        return False
    m = json.loads((cache / "meta.json").read_text())
    return (m.get("num_examples"), m.get("digest")) == examples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("MODEL") or "smollm2-135m")
    ap.add_argument("--preset", default=os.environ.get("PRESET") or "quick", choices=sorted(PRESETS))
    ap.add_argument("--name", default="demo", help="runs/<name> and results/<name>")
    ap.add_argument("--families", default="", help="comma-separated head families (default: the preset's)")
    ap.add_argument("--steps", type=int, default=0, help="training steps (default: the preset's)")
    ap.add_argument("--self-prompts", type=int, default=None,
                    help="self-written prompts added to the built-in set (default: the preset's; 0: none)")
    ap.add_argument("--sampled-answers", action=argparse.BooleanOptionalAction, default=None,
                    help="also train on the same prompts answered again, sampled at T=1 (default: the preset's)")
    ap.add_argument("--passage-prompts", type=int, default=None,
                    help="passage tasks built from the distilled answers (default: the preset's; 0: none)")
    ap.add_argument("--prompts", default="",
                    help="more prompts for the target to answer and the heads to train on (train.distill --prompts: "
                         "JSONL / .txt files, comma-separated). A base model writes no usable passages itself: give "
                         "it an instruct model's passage tasks, e.g. runs/demo/data/passages.jsonl")
    ap.add_argument("--suite", default="spec", help="benchmark suite (eval.bench --suite)")
    ap.add_argument("--until", choices=("train", "report"), default="report",
                    help="last stage to run: 'train' stops before the benchmark (run it later on a quiet machine)")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--results", default="results")
    a = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
