"""Throughput vs interactivity: tokens/s per sequence against total tokens/s over batch sizes and
draft lengths (the shape of NVIDIA's DeepSeek-R1 MTP charts).

    python -m eval.sweep --model smollm2-135m --methods vanilla,pld --draft-lengths 2,4,8 \
        --batch-sizes 1,2,4,8 --max-new-tokens 64 --out results/sweep

Each point is one `mtp.engine.generate` call over a batch of B suite prompts (EOS ignored so every
row makes max_new_tokens tokens), median over repeats, points interleaved per repeat.
interactivity = tokens per row / wall time; throughput = all tokens / wall time.
Methods are kit methods (vanilla, pld[:K], draft:<model>[:K], heads:<dir>[:K]); one without :K is
swept over --draft-lengths. HF `generate` is not swept (batch-1 runner only).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from eval._common import add_model_args, collect_meta, load_target
from mtp import results as R
from mtp.cli import cli_main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(p)
    p.add_argument("--methods", default="vanilla,pld")
    p.add_argument("--draft-lengths", default="2,4,8", help="K values for methods given without :K")
    p.add_argument("--batch-sizes", default="1,2,4,8")
    p.add_argument("--suite", default="spec")
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
    for flag in ("max_new_tokens", "repeats"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    return args


def expand(methods: list[str], ks: list[int]) -> list[str]:
    """pld -> pld:2, pld:4, ... ; specs that already end in :K, and vanilla, stay as they are."""
    out = []
    for m in methods:
        tail = m.rpartition(":")[2]
        if m == "vanilla" or (":" in m and tail.isdigit()) or m in ("hf", "hf-pld"):
            out.append(m)
        else:
            out += [f"{m}:{k}" for k in ks]
    return out


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    from mtp.bench import make_method
    from mtp.engine import generate
    from mtp.suites import encode_turn, load_suite

    model, tok = load_target(args)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    specs = expand([m.strip() for m in args.methods.split(",") if m.strip()],
                   [int(k) for k in args.draft_lengths.split(",")])
    variants = []
    for spec in specs:
        if spec.startswith("hf"):
            print(f"[sweep] skipping {spec}: HF generate is only run at batch 1 by eval.bench", file=sys.stderr)
            continue
        m = make_method(spec, model, tok)
        variants.append((spec, getattr(m, "drafter", None), getattr(m, "k", None)))
    items = load_suite(args.suite, max(batches))
    if args.input_tokens:
        import dataclasses

        items = [dataclasses.replace(it, min_input_tokens=args.input_tokens) for it in items]
    prompts = [encode_turn(tok, it, 0) for it in items]
    prompts = [prompts[i % len(prompts)] for i in range(max(batches))]

    def one(drafter, k, B, seed):
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        o = generate(model, prompts[:B], drafter=drafter, num_draft_tokens=k, max_new_tokens=args.max_new_tokens,
                     temperature=args.temperature, seed=seed, ignore_eos=True)
        if next(model.parameters()).device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, o

    for _, d, k in variants:  # warm-up
        one(d, k, 1, args.seed)
    runs: dict[tuple[str, int], list] = {}
    skipped = {}
    for r in range(args.repeats):
        for B in batches:
            for spec, d, k in variants:
                if (spec, B) in skipped:
                    continue
                try:
                    dt, o = one(d, k, B, args.seed + r)
                except NotImplementedError as e:
                    skipped[(spec, B)] = str(e)
                    continue
                runs.setdefault((spec, B), []).append((dt, o))
        print(f"[sweep] repeat {r + 1}/{args.repeats} done", file=sys.stderr)
    points = []
    for (spec, B), rs in runs.items():
        per_seq = [statistics.fmean(len(t) for t in o.tokens) / dt for dt, o in rs]
        total = [sum(len(t) for t in o.tokens) / dt for dt, o in rs]
        k = spec.rpartition(":")[2] if ":" in spec else "0"
        points.append({"label": spec, "method": spec.rpartition(":")[0] if k.isdigit() and ":" in spec else spec,
                       "K": int(k) if k.isdigit() else 0, "batch_size": B,
                       "tokens_per_s_per_seq": statistics.median(per_seq), "tokens_per_s_total": statistics.median(total),
                       "tokens_per_s_total_spread": max(total) - min(total),
                       "tau": statistics.median(o.stats.tau for _, o in rs), "wall_s": statistics.median(dt for dt, _ in rs)})
    pts = [(p["tokens_per_s_per_seq"], p["tokens_per_s_total"]) for p in points]
    for i in R.pareto_front(pts):
        points[i]["pareto"] = True
    meta = collect_meta(vars(args), model)
    R.atomic_write_json(out / "sweep.json", {"meta": meta, "points": points,
                                             "skipped": [{"label": s, "batch_size": b, "reason": e}
                                                         for (s, b), e in skipped.items()]})
    import csv
    import io

    buf = io.StringIO()
    cols = ["label", "method", "K", "batch_size", "tokens_per_s_per_seq", "tokens_per_s_total",
            "tokens_per_s_total_spread", "tau", "wall_s", "pareto"]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(points)
    R.atomic_write_text(out / "sweep.csv", buf.getvalue())
    import matplotlib.pyplot as plt

    res = R.load(out)
    plt.close(R.plot_sweep(res.sweep, out / "sweep.png",
                           title=f"{args.model}: throughput vs interactivity (T={args.temperature}, "
                                 f"{args.max_new_tokens} new tokens)"))
    print(json.dumps(R._jsonable({"out": str(out), "points": [{k: p.get(k) for k in ("label", "batch_size",
                                  "tokens_per_s_per_seq", "tokens_per_s_total", "tau")} for p in points]})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
