"""Cost model: measure verify and draft costs here, predict speedup, compare with a bench run.

    python -m eval.costmodel --bench results/smollm2-t0            # writes costmodel.* into it
    python -m eval.costmodel --model smollm2-135m --methods pld,vanilla --out results/cm   # costs only

Measures C(m), one target forward over m = 1..64 new tokens after a cached prefix (default: the
bench's median prompt length + half the output), the prefill, and each method's drafter time per
decode step; then predicts each method's speedup over the kit's plain loop (mtp.costmodel) from
the bench's measured acceptance, and reports it next to the measured speedup with the gap.
Tree methods (`:tree<N>`, prompt lookup with branches) are charged the tree-verify curve (one
forward over the pending token and N nodes under a tree mask), measured the same way. Every row
also splits the method's measured time into prefill, verify, drafting (measured in the bench) and
the rest of the decode loop. The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from eval._common import add_model_args, load_target, parse_methods
from mtp import costmodel, results
from mtp.methods import make_method
from mtp.cli import cli_main
from mtp.io import atomic_write_json, atomic_write_text, jsonable
from mtp.report import markdown_table, write_report
from mtp.runinfo import collect_meta
from mtp.suites import encode_turn, load_suite


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(p)
    p.set_defaults(model=None)
    p.add_argument("--bench", default=None, help="an eval.bench results folder (methods, acceptance, timings)")
    p.add_argument("--methods", default=None, help="methods to time, as for eval.bench (name=spec names one; "
                   "default: the bench's)")
    p.add_argument("--suite", default=None, help="prompts for drafter timing (default: the bench's)")
    p.add_argument("--prefix-len", type=int, default=None, help="cached prefix for the verify-cost curve")
    p.add_argument("--tokens", default=None, help="comma-separated m values (default 1..16,20,24,32,40,48,64)")
    p.add_argument("--repeats", type=int, default=7, help="timed forwards per point (median)")
    p.add_argument("--draft-prompts", type=int, default=3, help="prompts used to time each drafter")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--out", default=None, help="output folder (default: the bench folder)")
    args = p.parse_args(argv)
    if not args.bench and not (args.out and args.methods):
        p.error("give --bench DIR, or --methods and --out")
    if args.tokens is not None:
        args.tokens = _positive_ints(p, "--tokens", args.tokens)
    for name in ("repeats", "draft_prompts", "max_new_tokens", "prefix_len"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    return args


def _positive_ints(p, flag: str, text: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        p.error(f"{flag} must be comma-separated integers >= 1, got {text!r}")
    if not vals or min(vals) < 1:
        p.error(f"{flag} must be comma-separated integers >= 1, got {text!r}")
    return vals


def bench_config(bench: Path | None) -> tuple[dict, list[dict], dict]:
    """(config, samples, summary) of an eval.bench folder (empty without one); config["auto_k"]
    holds the draft lengths its ":auto" methods chose (by method name)."""
    if bench is None:
        return {}, [], {}
    summary = json.loads((bench / "summary.json").read_text()) if (bench / "summary.json").exists() else {}
    meta = json.loads((bench / "meta.json").read_text())
    config = {**meta["config"], "auto_k": meta.get("auto_k", {})}
    return config, results.read_samples(bench / "samples.jsonl"), summary


def pin_auto(methods_spec: list[tuple[str, str]], auto_k: dict) -> list[tuple[str, str]]:
    """":auto" -> the draft length the bench chose for that method, so the drafter is timed at the
    length that was measured (choosing again on a noisy machine can pick another)."""
    return [(n, s[: -len(":auto")] + f":{auto_k[n]}" if s.endswith(":auto") and n in auto_k else s)
            for n, s in methods_spec]


COLS = ["method", "K", "tau", "alpha_iid", "draft_step_ms", "verify_ms", "decode_ms", "predicted_speedup_chain",
        "predicted_speedup", "measured_speedup", "measured_speedup_spread", "gap", "predicted_speedup_in_run",
        "gap_in_run", "predicted_tokens_per_s",
        "measured_tokens_per_s", "draft_step_ms_in_bench", "prefill_share", "verify_share", "draft_share",
        "other_share"]
NOTES = ("predicted = speedup over the kit's plain loop from per-step draft lengths, measured C(m) and drafter time "
         "per step (prefill included); predicted_speedup_chain = Leviathan's formula with tau = 1 + sum a_k and "
         "C(K+1) in place of a constant verify cost; measured = bench speedup vs measured_against; gap = predicted "
         "/ measured - 1; tree methods use the tree-verify cost. predicted_speedup_in_run / gap_in_run: the same "
         "prediction from the run's own costs (the median time of its timed forwards by size and kind, pooled over "
         "methods, with each sample's measured prefill and drafting): what is left out is the decode loop's own work. "
         "*_share: measured wall time split into prefill, verify (timed in the run when the samples have step_costs, "
         "else priced from the cost curves), drafting (measured in the bench) and the rest of the decode loop.")


def write_outputs(out: Path, result: dict, title: str) -> None:
    """costmodel.json / .csv / .md / .png, and the folder's report.md (which links them)."""
    from mtp.plots import plot_costmodel, pyplot

    atomic_write_json(out / "costmodel.json", result)
    rows, costs = result["methods"], {v["tokens"]: v["ms"] for v in result["verify_cost"]}
    results.write_csv(out / "costmodel.csv", rows, COLS)
    md = [f"# Cost model: {title}", "",
          f"Verify cost at prefix {result['prefix_len']} (ms, median); prefill of {result['prefill_tokens']} tokens "
          f"{result['prefill_ms']:.1f} ms.", "",
          markdown_table([{"tokens": m, "ms": ms, "x C(1)": ms / costs[min(costs)]} for m, ms in costs.items()],
                         ["tokens", "ms", "x C(1)"]), "",
          *_run_curve_md(result.get("run_cost") or []),
          f"Predicted vs measured (measured against {result['measured_against']}):", "",
          markdown_table(rows, COLS), "", NOTES, "", "![costmodel](costmodel.png)"]
    pyplot().close(plot_costmodel(results.load(out), out / "costmodel.png"))
    atomic_write_text(out / "costmodel.md", "\n".join(md) + "\n")
    write_report(out)


def _run_curve_md(run_cost: list[dict]) -> list[str]:
    """The bench run's own forward costs, as markdown lines (none when the run timed none)."""
    if not run_cost:
        return []
    return ["Forward cost timed in the bench run itself (median over its forwards of each size, all methods "
            "pooled):", "", markdown_table(run_cost, ["kind", "tokens", "ms", "forwards"]), ""]


def _drafts_trees(method) -> bool:
    from mtp.drafters import LookupUnionDrafter

    d = getattr(method, "drafter", None)
    if isinstance(d, LookupUnionDrafter):  # a grafted lookup branch makes a tree (a step without one is
        return True  # a chain: this prices those steps at the tree-verify cost too)
    d = getattr(d, "fallback", d)  # pld+heads: the heads' shape
    return getattr(d, "tree", None) is not None or getattr(d, "branches", 1) > 1


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    bench = Path(args.bench) if args.bench else None
    cfg, samples, summary = bench_config(bench)
    for k in ("model", "dtype", "device", "threads"):
        if getattr(args, k) is None and cfg.get(k) is not None:
            setattr(args, k, cfg[k])
    args.model = args.model or "smollm2-135m"
    out = Path(args.out) if args.out else bench
    out.mkdir(parents=True, exist_ok=True)
    methods_spec = pin_auto(parse_methods(args.methods) if args.methods else list(cfg.get("methods", {}).items()),
                            cfg.get("auto_k", {}))
    max_new = args.max_new_tokens or cfg.get("max_new_tokens") or 64
    temperature = args.temperature if args.temperature is not None else cfg.get("temperature", 0.0)

    model, tok = load_target(args)
    prompts = [encode_turn(tok, it, 0) for it in load_suite(args.suite or cfg.get("suite") or "spec",
                                                            args.draft_prompts)]
    median_prompt = int(statistics.median([s["prompt_tokens"] for s in samples if "prompt_tokens" in s]
                                          or [len(p) for p in prompts]))
    prefix = args.prefix_len or median_prompt + max_new // 2
    tokens = args.tokens or list(costmodel.DEFAULT_TOKENS)
    print(f"[costmodel] forward cost at prefix {prefix} for m in {tokens}", file=sys.stderr)
    costs = costmodel.measure_forward_cost(model, prefix, tokens, repeats=args.repeats)
    C = costmodel.interpolate(costs)
    prefill = costmodel.measure_prefill_cost(model, median_prompt)
    reference = "vanilla" if any(n == "vanilla" for n, _ in methods_spec) else summary.get("baseline")
    built = [(name, spec, make_method(spec, model, tok)) for name, spec in methods_spec]
    C_tree = None
    if any(_drafts_trees(m) for _, _, m in built):
        print("[costmodel] tree-verify cost", file=sys.stderr)
        C_tree = costmodel.interpolate(costmodel.measure_forward_cost(model, prefix, tokens, repeats=args.repeats,
                                                                      tree=True))
    curves = costmodel.run_cost_curves(samples)
    run_cost = [{"kind": kind, "tokens": m, "ms": 1e3 * sec, "forwards": curves["count_" + kind][m]}
                for kind in ("chain", "tree") for m, sec in curves[kind].items()]
    rows = []
    for name, spec, m in built:
        step_s, note = costmodel.time_drafter(m, model, prompts, max_new, temperature)
        row = costmodel.method_row(name, costmodel.nominal_k(m), samples, C, step_s, prefill, reference,
                                   C_tree if _drafts_trees(m) else None, curves if run_cost else None)
        row.update(spec=spec, note=note, measured_speedup_vs_baseline=summary.get("methods", {}).get(name, {})
                   .get("overall", {}).get("speedup"))
        rows.append(row)
        print(f"[costmodel] {name}: " + ", ".join(f"{k}={v:.3g}" for k, v in row.items() if isinstance(v, float)),
              file=sys.stderr)
    meta = collect_meta({"bench": str(bench) if bench else None, "model": args.model, "prefix_len": prefix,
                         "tokens": tokens, "repeats": args.repeats, "median_prompt_tokens": median_prompt,
                         "max_new_tokens": max_new, "temperature": temperature}, model)
    if bench is None:
        atomic_write_json(out / "meta.json", meta)
    result = {"meta": meta, "prefix_len": prefix, "prefill_ms": 1e3 * prefill, "prefill_tokens": median_prompt,
              "verify_cost": [{"tokens": m, "ms": 1e3 * s, "ms_per_token": 1e3 * s / m} for m, s in costs.items()],
              "run_cost": run_cost, "methods": rows, "measured_against": reference, "notes": NOTES}
    write_outputs(out, result, args.model)
    print(json.dumps(jsonable({"out": str(out), "prefix_len": prefix,
                               "verify_ms": {m: round(1e3 * s, 3) for m, s in costs.items()},
                               "methods": [{k: r.get(k) for k in ("method", "predicted_speedup", "measured_speedup",
                                                                  "gap", "predicted_speedup_in_run", "gap_in_run")}
                                           for r in rows]})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
