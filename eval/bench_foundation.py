"""The foundation benchmark (issue 2, `make bench`): the kit's plain loop vs HF `generate`, and the
kit's prompt lookup vs HF prompt lookup, at batch 1, greedy, in bf16 and fp32.

    python -m eval.bench_foundation --model smollm2-135m [--num-prompts 20] [--repeats 3] [--out results/foundation]

The runner is mtp.bench.SuiteRun on the "foundation" suite (short chat prompts; several quote text
back so prompt lookup has something to copy): methods interleaved per prompt, order rotated each
repeat, after warm-up. One results folder per dtype (<out>/bf16, <out>/fp32: samples.jsonl,
summary.json/csv, report.md, plots; see mtp.results), speedup over `vanilla`. Greedy exactness: in
fp32 every method must equal `vanilla` token for token; in bf16 the exact-match rate and the logit
gap at the first divergence are reported. Prints a table, then a final JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mtp import results
from mtp.bench import SuiteRun, make_method
from mtp.cli import cli_main
from mtp.io import atomic_write_json, jsonable
from mtp.runinfo import collect_meta
from mtp.suites import load_suite

RESUME_KEYS = ("model", "dtype", "num_prompts", "max_new_tokens")
ROW_KEYS = ("tokens_per_s", "speedup", "speedup_min", "speedup_max", "tau", "draft_acceptance_rate", "exact_match",
            "new_tokens")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="built-in name, local folder or hub id")
    ap.add_argument("--dtypes", default="bf16,fp32")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--methods", default="hf,vanilla,hf-pld,pld")
    ap.add_argument("--num-prompts", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default="results/foundation", help="one results folder per dtype under it")
    ap.add_argument("--overwrite", action="store_true", help="discard existing samples")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "vanilla" not in args.methods:
        args.methods.insert(0, "vanilla")
    for flag in ("num_prompts", "max_new_tokens", "repeats"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1")
    return args


def run_dtype(dtype: str, args) -> dict:
    """One dtype's results folder; returns {"out", "rows": {method: ROW_KEYS}, "mismatches"}."""
    from mtp.models import load_model

    out = Path(args.out) / dtype
    config = {"model": args.model, "dtype": dtype, "suite": "foundation", "num_prompts": args.num_prompts,
              "max_new_tokens": args.max_new_tokens, "repeats": args.repeats, "warmup": args.warmup,
              "temperature": 0.0, "methods": {m: m for m in args.methods}, "title": f"Foundation: {args.model} {dtype}"}
    results.check_resume(out, config, RESUME_KEYS, args.overwrite)
    model, tok = load_model(args.model, dtype=dtype, device=args.device)
    methods = [make_method(s, model, tok) for s in args.methods]
    bench = SuiteRun(out, methods, load_suite("foundation", args.num_prompts), tok, repeats=args.repeats,
                     warmup=args.warmup, max_new_tokens=args.max_new_tokens)
    atomic_write_json(out / "meta.json", collect_meta(config, model))
    bench.run()
    summary = bench.finalize(model, plots=not args.no_plots, baseline="vanilla")
    rows = {m: {k: e["overall"][k] for k in ROW_KEYS} for m, e in summary["methods"].items()}
    return {"out": str(out), "rows": rows, "mismatches": summary["mismatches"]}


def print_table(model: str, dtype: str, res: dict, args) -> None:
    print(f"\n== {model} {dtype}  (batch 1, greedy, {args.max_new_tokens} new tokens, "
          f"{args.num_prompts} prompts x {args.repeats} repeats) -> {res['out']}")
    print(f"{'method':10s} {'tok/s':>8s} {'speedup':>8s} {'spread':>14s} {'tau':>6s} {'accept':>7s} {'exact':>6s}")
    f = lambda x, spec: format(x, spec) if x is not None and x == x else "-"  # noqa: E731
    for n, row in res["rows"].items():
        print(f"{n:10s} {f(row['tokens_per_s'], '8.1f')} {f(row['speedup'], '8.3f')} "
              f"[{f(row['speedup_min'], '5.3f')},{f(row['speedup_max'], '5.3f')}] {f(row['tau'], '6.3f')} "
              f"{f(row['draft_acceptance_rate'], '7.3f')} {f(row['exact_match'], '6.2f')}")
    for mm in res["mismatches"]:
        print(f"    {mm['method']} diverges: prompt {mm['prompt_id']} repeat {mm['repeat']} at token "
              f"{mm['first_diff']}, logit gap {mm['logit_gap']}")


@cli_main
def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.num_prompts = min(args.num_prompts, len(load_suite("foundation")))
    result = {"model": args.model, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
              "num_prompts": args.num_prompts, "threads": torch.get_num_threads(), "by_dtype": {}}
    for d in args.dtypes.split(","):
        result["by_dtype"][d] = res = run_dtype(d.strip(), args)
        print_table(args.model, d, res, args)
    fp32 = result["by_dtype"].get("fp32")
    if fp32:
        result["fp32_greedy_exact"] = all(r["exact_match"] == 1.0 for r in fp32["rows"].values())
    print(json.dumps(jsonable(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
