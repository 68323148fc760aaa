"""Cost model: measure verify and draft costs here, predict speedup, compare with a bench run.

    python -m eval.costmodel --bench results/smollm2-t0            # writes costmodel.* into it
    python -m eval.costmodel --model smollm2-135m --methods pld,vanilla --out results/cm   # costs only

Measures C(m), one target forward over m = 1..64 new tokens after a cached prefix (default: the
bench's median prompt length + half the output), the prefill, and each method's drafter time per
decode step; then predicts each method's speedup over the kit's plain loop (mtp.costmodel) from
the bench's measured acceptance, and reports it next to the measured speedup with the gap.
Chains only (tree drafting: later). The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from eval._common import add_model_args, collect_meta, load_target
from mtp import costmodel as CM
from mtp import results as R
from mtp.cli import cli_main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(p)
    p.set_defaults(model=None)
    p.add_argument("--bench", default=None, help="an eval.bench results folder (methods, acceptance, timings)")
    p.add_argument("--methods", default=None, help="methods to time (default: the bench's)")
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


def _nominal_k(method) -> int:
    if getattr(method, "drafter", None) is not None:
        return int(method.k if method.k is not None else method.drafter.num_draft_tokens)
    return int(getattr(method, "pld", None) or 0)


def time_drafter(method, model, prompts: list[list[int]], max_new_tokens: int, temperature: float) -> tuple[float, str]:
    """Seconds per decode step spent drafting, measured inside the engine. HF prompt lookup is
    timed with the kit's prompt-lookup drafter (same algorithm); plain methods cost 0."""
    from mtp.drafters import PromptLookupDrafter
    from mtp.engine import generate

    drafter, note = getattr(method, "drafter", None), ""
    if drafter is None and getattr(method, "pld", None):
        drafter, note = PromptLookupDrafter(num_draft_tokens=method.pld), "draft cost of the kit's PLD drafter"
    if drafter is None:
        return 0.0, note
    timed = CM.TimedDrafter(drafter)
    for i, p in enumerate(prompts):
        generate(model, p, drafter=timed, num_draft_tokens=_nominal_k(method) or None, max_new_tokens=max_new_tokens,
                 temperature=temperature, seed=i)
    return timed.step_s, note


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    bench = Path(args.bench) if args.bench else None
    cfg = json.loads((bench / "meta.json").read_text())["config"] if bench else {}
    for k in ("model", "dtype", "device", "threads"):
        if getattr(args, k) is None and cfg.get(k) is not None:
            setattr(args, k, cfg[k])
    args.model = args.model or "smollm2-135m"
    out = Path(args.out) if args.out else bench
    out.mkdir(parents=True, exist_ok=True)
    methods_spec = ([(m, m) for m in args.methods.split(",")] if args.methods
                    else list(cfg.get("methods", {}).items()))
    max_new = args.max_new_tokens or cfg.get("max_new_tokens") or 64
    temperature = args.temperature if args.temperature is not None else cfg.get("temperature", 0.0)
    samples = R.read_jsonl(bench / "samples.jsonl") if bench else []

    from mtp.bench import make_method
    from mtp.suites import encode_turn, load_suite

    model, tok = load_target(args)
    prompt_lens = [s["prompt_tokens"] for s in samples if "prompt_tokens" in s]
    items = load_suite(args.suite or cfg.get("suite") or "spec", args.draft_prompts)
    prompts = [encode_turn(tok, it, 0) for it in items]
    median_prompt = int(statistics.median(prompt_lens or [len(p) for p in prompts]))
    prefix = args.prefix_len or median_prompt + max_new // 2
    tokens = args.tokens or list(CM.DEFAULT_TOKENS)
    print(f"[costmodel] forward cost at prefix {prefix} for m in {tokens}", file=sys.stderr)
    costs = CM.measure_forward_cost(model, prefix, tokens, repeats=args.repeats)
    C = CM.interpolate(costs)
    prefill = CM.measure_prefill_cost(model, median_prompt)

    summary = json.loads((bench / "summary.json").read_text()) if bench and (bench / "summary.json").exists() else {}
    names = [n for n, _ in methods_spec]
    plain_ref = "vanilla" if "vanilla" in names else None
    rows = []
    for name, spec in methods_spec:
        m = make_method(spec, model, tok)
        step_s, note = time_drafter(m, model, prompts, max_new, temperature)
        K = _nominal_k(m)
        row = {"method": name, "spec": spec, "K": K, "draft_step_ms": 1e3 * step_s, "verify_ms": 1e3 * C(K + 1),
               "decode_ms": 1e3 * C(1), "note": note}
        ms = [s for s in samples if s["method"] == name]
        if ms:
            st = R.spec_stats(ms)
            pp = st.per_position_acceptance()
            tau_step = 1.0 + sum(pp)
            row.update(tau=st.tau, tau_step=tau_step, alpha_iid=CM.implied_alpha(tau_step, K) if K else float("nan"),
                       predicted_speedup_chain=CM.predict_chain(pp, K, C, step_s) if K else 1.0,
                       **CM.predict_stepwise(ms, C, step_s, prefill))
            row["predicted_speedup"] = row["predicted_speedup"] if K else 1.0
            row["measured_tokens_per_s"] = R.tokens_per_s(ms)[0]
            ref = plain_ref or summary.get("baseline")
            row["measured_against"] = ref
            if ref:
                row["measured_speedup"], row["measured_speedup_spread"] = R.speedup(
                    ms, [s for s in samples if s["method"] == ref])
            row["measured_speedup_vs_baseline"] = summary.get("methods", {}).get(name, {}).get("overall", {}).get("speedup")
            ps, mm = row.get("predicted_speedup"), row.get("measured_speedup")
            row["gap"] = ps / mm - 1 if ps and mm and mm == mm else float("nan")
        rows.append(row)
        print(f"[costmodel] {name}: " + ", ".join(f"{k}={v:.3g}" for k, v in row.items() if isinstance(v, float)),
              file=sys.stderr)

    meta = collect_meta({"bench": str(bench) if bench else None, "model": args.model, "prefix_len": prefix,
                         "tokens": tokens, "repeats": args.repeats, "median_prompt_tokens": median_prompt,
                         "max_new_tokens": max_new, "temperature": temperature}, model)
    result = {"meta": meta, "prefix_len": prefix, "prefill_ms": 1e3 * prefill, "prefill_tokens": median_prompt,
              "verify_cost": [{"tokens": m, "ms": 1e3 * s, "ms_per_token": 1e3 * s / m} for m, s in costs.items()],
              "methods": rows,
              "notes": "predicted = speedup over the kit's plain loop from per-step draft lengths, measured C(m) "
                       "and drafter time per step (prefill included); predicted_speedup_chain = Leviathan's "
                       "formula with tau = 1 + sum a_k and C(K+1) in place of a constant verify cost; measured = "
                       "bench speedup vs measured_against; gap = predicted / measured - 1. Chains only."}
    R.atomic_write_json(out / "costmodel.json", result)
    cols = ["method", "K", "tau", "alpha_iid", "draft_step_ms", "verify_ms", "decode_ms", "predicted_speedup_chain",
            "predicted_speedup", "measured_speedup", "measured_speedup_spread", "gap", "predicted_tokens_per_s",
            "measured_tokens_per_s"]
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    R.atomic_write_text(out / "costmodel.csv", buf.getvalue())
    md = [f"# Cost model: {args.model}", "",
          f"Verify cost at prefix {prefix} (ms, median of {args.repeats}); prefill of {median_prompt} tokens "
          f"{1e3 * prefill:.1f} ms.", "",
          R.markdown_table([{"tokens": m, "ms": 1e3 * s, "x C(1)": s / costs[min(costs)]} for m, s in costs.items()],
                           ["tokens", "ms", "x C(1)"]), "",
          f"Predicted vs measured (measured against {plain_ref or summary.get('baseline')}):", "",
          R.markdown_table(rows, cols), "", result["notes"], ""]
    import matplotlib.pyplot as plt

    plt.close(R.plot_costmodel(R.load(out), out / "costmodel.png"))
    md.append("![costmodel](costmodel.png)")
    R.atomic_write_text(out / "costmodel.md", "\n".join(md) + "\n")
    print(json.dumps(R._jsonable({"out": str(out), "prefix_len": prefix,
                                  "verify_ms": {m: round(1e3 * s, 3) for m, s in costs.items()},
                                  "methods": [{k: r.get(k) for k in ("method", "predicted_speedup", "measured_speedup",
                                                                     "gap")} for r in rows]})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
