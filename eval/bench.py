"""Benchmark generation methods on a prompt suite: acceptance, tau, tokens/s, speedup, exact match.

    python -m eval.bench --model smollm2-135m --methods hf,vanilla,hf-pld,pld --suite spec \
        --temperature 0 --max-new-tokens 128 --repeats 3 --out results/smollm2-t0

Methods (mtp.bench.make_method): hf, vanilla, hf-pld[:K], pld[:K], draft:<model>[:K],
heads:<checkpoint dir>[:K][:tree<N>], pld+heads:<dir>, union+heads:<dir>, adapt+heads:<dir>; "name=spec" gives a method a custom name
(e.g. "copy=vanilla"). The runner is mtp.bench.SuiteRun: methods interleaved per prompt (order
rotated per repeat) after warm-up. Every finished
(method, prompt, turn, repeat) cell is appended to samples.jsonl at once; rerunning with the same
--out skips finished cells, and Ctrl-C keeps them (the summary is written on the way out).
The last stdout line is the overall summary as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eval._common import add_model_args, init_wandb, load_target, log_table, parse_methods
from mtp import results
from mtp.bench import MethodSpecError, SuiteRun, context_method, make_method
from mtp.cli import cli_main
from mtp.io import atomic_write_json, jsonable
from mtp.runinfo import collect_meta
from mtp.suites import LENGTH_MIXES, load_suite, suite_names, with_lengths

# Config fields that must match to resume into an existing folder.
RESUME_KEYS = ("model", "suite", "num_prompts", "temperature", "top_k", "top_p", "max_new_tokens", "lengths",
               "long_input_tokens", "long_output_tokens", "seed", "dtype")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(p)
    g = p.add_argument_group("what to run")
    g.add_argument("--methods", default="hf,vanilla,hf-pld,pld", help="comma-separated method specs")
    g.add_argument("--suite", default="spec", help=f"{suite_names()} or a JSONL file")
    g.add_argument("--num-prompts", type=int, default=None, help="category-balanced subset of the suite")
    g.add_argument("--lengths", default=None,
                   help=f"comma-separated input-output length mixes from {LENGTH_MIXES}")
    g.add_argument("--long-input-tokens", type=int, default=1024, help="prompt length of a 'long' input")
    g.add_argument("--long-output-tokens", type=int, default=None,
                   help="max new tokens of a 'long' output (default 4 x --max-new-tokens)")
    g = p.add_argument_group("generation")
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--seed", type=int, default=0, help="base seed; each cell gets a seed derived from it")
    g = p.add_argument_group("measurement")
    g.add_argument("--repeats", type=int, default=3)
    g.add_argument("--warmup", type=int, default=1, help="untimed runs of every method before measuring")
    g.add_argument("--strict-exact", type=float, default=None, metavar="GAP",
                   help="exit 1 if a greedy output differs from the baseline's where the logit gap exceeds GAP")
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, help="results folder (resumed when it exists)")
    g.add_argument("--overwrite", action="store_true", help="discard an existing folder's samples")
    g.add_argument("--no-plots", action="store_true")
    g.add_argument("--wandb", action="store_true", help="log to wandb (offline unless WANDB_MODE is set)")
    g.add_argument("--wandb-project", default="mtp-eval")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.num_prompts is not None and args.num_prompts < 1:
        p.error("--num-prompts must be >= 1 (omit it for the whole suite)")
    if args.max_new_tokens < 1:
        p.error("--max-new-tokens must be >= 1")
    if args.long_output_tokens is None:
        args.long_output_tokens = 4 * args.max_new_tokens
    return args


def _config(args, methods) -> dict:
    c = {k: getattr(args, k) for k in ("model", "suite", "num_prompts", "temperature", "top_k", "top_p",
                                       "max_new_tokens", "repeats", "warmup", "seed", "dtype", "device", "threads",
                                       "long_input_tokens", "long_output_tokens")}
    c["lengths"] = args.lengths.split(",") if args.lengths else None
    c["methods"] = {n: s for n, s in methods}
    c["context_method"] = context_method([n for n, _ in methods])
    return c


def build_methods(specs: list[tuple[str, str]], model, tok, temperature: float = 0.0) -> list:
    """mtp.bench methods named as on the command line (":auto" lengths for decoding at `temperature`);
    a bad spec exits with its error."""
    methods = []
    for name, spec in specs:
        try:
            m = make_method(spec, model, tok, temperature=temperature)
        except MethodSpecError as e:
            raise SystemExit(f"error: {e}") from None
        m.name = name
        methods.append(m)
    return methods


def load_items(args, config: dict) -> list:
    items = load_suite(args.suite, args.num_prompts)
    if args.lengths:
        items = with_lengths(items, config["lengths"], long_input_tokens=args.long_input_tokens,
                             short_output_tokens=args.max_new_tokens, long_output_tokens=args.long_output_tokens)
    return items


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods_spec = parse_methods(args.methods)
    config = _config(args, methods_spec)
    results.check_resume(out, config, RESUME_KEYS, args.overwrite)
    model, tok = load_target(args)
    methods = build_methods(methods_spec, model, tok, args.temperature)
    items = load_items(args, config)
    meta = collect_meta(config, model)
    meta["num_items"] = len(items)
    meta["auto_k"] = {m.name: m.auto_k for m in methods if m.auto_k is not None}  # eval.costmodel times these
    atomic_write_json(out / "meta.json", meta)
    bench = SuiteRun(out, methods, items, tok, repeats=args.repeats, warmup=args.warmup,
                     max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                     top_p=args.top_p, seed=args.seed)
    wb = init_wandb(args.wandb, args.wandb_project, meta, out, name=out.name)
    interrupted = False
    try:
        bench.run()
    except KeyboardInterrupt:
        interrupted = True
        print("[bench] interrupted: summarizing the finished cells", file=sys.stderr)
    except Exception:
        print("[bench] a method failed: summarizing the finished cells before re-raising", file=sys.stderr)
        bench.finalize(plots=False)
        raise
    summary = bench.finalize(model, plots=not args.no_plots)
    overall = {m: {k: e["overall"][k] for k in results.SUMMARY_KEYS} for m, e in summary["methods"].items()}
    wb.log({f"{m}/{k}": v for m, d in overall.items() for k, v in d.items() if isinstance(v, (int, float))})
    log_table(wb, "summary", results.summary_rows(summary))
    wb.finish()
    print(json.dumps(jsonable({"out": str(out), "baseline": summary["baseline"], "overall": overall})))
    if interrupted:
        return 130
    return strict_exact_rc(summary, args.strict_exact)


def strict_exact_rc(summary: dict, max_gap: float | None) -> int:
    """1 when a greedy mismatch has a logit gap above max_gap (or none measured), else 0."""
    if max_gap is None:
        return 0
    bad = [mm for mm in summary["mismatches"] if mm["logit_gap"] is None or abs(mm["logit_gap"]) > max_gap]
    if bad:
        print(f"[bench] {len(bad)} greedy mismatches above logit gap {max_gap}: {bad[:5]}", file=sys.stderr)
        return 1
    return 0


@cli_main
def main(argv=None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
