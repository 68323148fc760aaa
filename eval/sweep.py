"""Throughput vs interactivity: tokens/s per sequence against total tokens/s over batch sizes and
draft lengths (the shape of NVIDIA's DeepSeek-R1 MTP charts).

    python -m eval.sweep --model smollm2-135m --methods vanilla,pld --draft-lengths 2,4,8 \
        --batch-sizes 1,2,4,8 --max-new-tokens 64 --out results/sweep

Every batch size B decodes the same --num-prompts suite prompts (default: the least common multiple of
the batch sizes), as N/B `mtp.engine.generate` calls over B prompts each (EOS ignored so every row
makes max_new_tokens tokens); median over repeats, points interleaved per repeat (the one batch
sweep, mtp.sweep.batch_sweep). The folder gets sweep.json/csv/png, meta.json and report.md.
interactivity = tokens per row / wall time; throughput = all tokens / wall time.
Methods are kit methods, optionally named "name=spec" (vanilla, pld[:K], draft:<model>[:K], heads:<dir>[:K|:auto], pld+heads:..., union+heads:..., adapt+heads:...);
one without :K (or :auto, :autotree, :tree<N>) is swept over --draft-lengths; with :auto the cost model
picks K at each batch size (mtp.shape: this machine's verify cost at that batch size, the head's held-out
acceptance), and :autotree methods and the adaptive union (adapt+heads:...) are built at each batch size too. HF `generate` is not swept (batch-1 runner only).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

from eval._common import add_model_args, load_target
from mtp import results
from mtp.methods import make_method
from mtp.cli import cli_main
from mtp.io import atomic_write_json, jsonable
from mtp.report import SWEEP_COLS, write_report
from mtp.runinfo import collect_meta
from mtp.suites import encode_turn, load_suite
from mtp.sweep import batch_sweep, sweep_size


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(p)
    p.add_argument("--methods", default="vanilla,pld")
    p.add_argument("--draft-lengths", default="2,4,8", help="K values for methods given without :K")
    p.add_argument("--batch-sizes", default="1,2,4,8")
    p.add_argument("--suite", default="spec")
    p.add_argument("--num-prompts", type=int, default=0,
                   help="prompts measured at every batch size (batch B runs them as N/B batches; every batch size "
                        "must divide N); 0: the least common multiple of --batch-sizes")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--input-tokens", type=int, default=0,
                   help="pad each prompt with reference documents to at least this many tokens (e.g. 1024 for "
                        "the long-input mix); 0: the suite's own prompts")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    for flag in ("batch_sizes", "draft_lengths"):
        text = getattr(args, flag)
        try:
            vals = [int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            vals = []
        if not vals or min(vals) < 1:
            p.error(f"--{flag.replace('_', '-')} must be comma-separated integers >= 1, got {text!r}")
        setattr(args, flag, ",".join(map(str, vals)))
    try:
        args.num_prompts = sweep_size([int(b) for b in args.batch_sizes.split(",")], args.num_prompts)
    except ValueError as e:
        p.error(f"--num-prompts: {e}")
    for flag in ("max_new_tokens", "repeats"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    return args


COMPLETE = re.compile(r"\d+|auto|autotree|tree\d+|chain\d+")  # a spec's last part that fixes its drafting shape


def expand(methods: list[str], ks: list[int]) -> list[str]:
    """pld -> pld:2, pld:4, ... ; specs that already fix their shape (:K, :auto, :autotree,
    :tree<N>, :chain<N>), and vanilla, stay as they are."""
    out = []
    for m in methods:
        tail = m.rpartition(":")[2]
        if m == "vanilla" or (":" in m and COMPLETE.fullmatch(tail)) or m in ("hf", "hf-pld"):
            out.append(m)
        else:
            out += [f"{m}:{k}" for k in ks]
    return out


def per_batch_size(spec: str) -> bool:
    """Whether the method's drafter is chosen for the batch size: `:auto` (the chain length),
    `:autotree` (the tree) and the adaptive union (its verify-cost curve, timed at that batch size)."""
    return spec.endswith((":auto", ":autotree")) or spec.startswith("adapt+heads:")


def variants(specs: list[str], model, tok, batch_sizes: list[int] = (1,),
             temperature: float = 0.0) -> list[tuple[str, object, object]]:
    """(label, drafter, K) of each kit method; HF methods are batch-1 only (eval.bench). An
    ":auto" method's K is a {batch size: K} dict, chosen by the cost model at each batch size (from
    the held-out acceptance at `temperature`: mtp.methods.make_method)."""
    out = []
    for label in specs:
        name, eq, spec = label.partition("=")
        if not eq or ":" in name or "/" in name:  # "name=spec" names a method; a bare spec is its own label
            name, spec = label, label
        label = name
        if spec.startswith("hf"):
            print(f"[sweep] skipping {spec}: HF generate is only run at batch 1 by eval.bench", file=sys.stderr)
            continue
        if per_batch_size(spec):
            ms = {B: make_method(spec, model, tok, batch_size=B, temperature=temperature) for B in batch_sizes}
            out.append((label, {B: x.drafter for B, x in ms.items()}, {B: x.auto_k or 0 for B, x in ms.items()}))
            continue
        m = make_method(spec, model, tok)
        out.append((label, getattr(m, "drafter", None), getattr(m, "k", None)))
    return out


def sweep_prompts(args, tok, n: int) -> list[list[int]]:
    items = load_suite(args.suite, n)
    if args.input_tokens:
        items = [dataclasses.replace(it, min_input_tokens=args.input_tokens) for it in items]
    return [encode_turn(tok, it, 0) for it in items]


def write_outputs(out: Path, meta: dict, points: list[dict], skipped: list[dict], title: str) -> None:
    """sweep.json / .csv / .png, meta.json and report.md: a results folder mtp.results loads."""
    from mtp.plots import plot_sweep, pyplot

    atomic_write_json(out / "meta.json", meta)
    atomic_write_json(out / "sweep.json", {"meta": meta, "points": points, "skipped": skipped})
    results.write_csv(out / "sweep.csv", points, SWEEP_COLS)
    pyplot().close(plot_sweep(results.load(out).sweep, out / "sweep.png", title=title))
    write_report(out)


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tok = load_target(args)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    specs = expand([m.strip() for m in args.methods.split(",") if m.strip()],
                   [int(k) for k in args.draft_lengths.split(",")])
    points, skipped = batch_sweep(model, variants(specs, model, tok, batches, args.temperature),
                                  sweep_prompts(args, tok, args.num_prompts), batches, repeats=args.repeats,
                                  max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed,
                                  num_prompts=args.num_prompts)
    config = {**vars(args), "title": f"Throughput vs interactivity: {args.model}"}
    write_outputs(out, collect_meta(config, model), points, skipped,
                  f"{args.model}: throughput vs interactivity (T={args.temperature}, {args.max_new_tokens} new tokens)")
    print(json.dumps(jsonable({"out": str(out), "points": [{k: p.get(k) for k in ("label", "batch_size",
                               "tokens_per_s_per_seq", "tokens_per_s_total", "tau")} for p in points]})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
