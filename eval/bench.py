"""Benchmark generation methods on a prompt suite: acceptance, tau, tokens/s, speedup, exact match.

    python -m eval.bench --model smollm2-135m --methods hf,vanilla,hf-pld,pld --suite spec \
        --temperature 0 --max-new-tokens 128 --repeats 3 --out results/smollm2-t0

Methods (mtp.bench.make_method): hf, vanilla, hf-pld[:K], pld[:K], draft:<model>[:K],
heads:<checkpoint dir>[:K]; "name=spec" gives a method a custom name (e.g. "copy=vanilla").
Methods run interleaved per prompt (order rotated per repeat) after warm-up. Every finished
(method, prompt, turn, repeat) cell is appended to samples.jsonl at once; rerunning with the same
--out skips finished cells, and Ctrl-C keeps them (the summary is written on the way out).
The last stdout line is the overall summary as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

from eval._common import add_model_args, collect_meta, init_wandb, load_target, log_table
from mtp import results as R
from mtp.cli import cli_main
from mtp.suites import LENGTH_MIXES, encode_turn, load_suite, suite_names, with_lengths

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


def parse_methods(text: str) -> list[tuple[str, str]]:
    """"hf,copy=vanilla" -> [("hf", "hf"), ("copy", "vanilla")]; names must be unique."""
    out = []
    for part in (t.strip() for t in text.split(",")):
        if not part:
            continue
        name, _, spec = part.partition("=") if "=" in part else (part, "", part)
        out.append((name.strip(), spec.strip()))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise SystemExit(f"method names must be unique, got {names}; rename one with name=spec")
    return out


def cell_seed(base: int, prompt_id: str, turn: int, repeat: int) -> int:
    """Every method gets the same seed for a cell; stable across runs (crc32, not hash())."""
    return (base * 1_000_003 + zlib.crc32(f"{prompt_id}/{turn}/{repeat}".encode())) % (2**31)


def context_method(names: list[str]) -> str:
    """Whose turn-i answers later turns carry: the kit's plain loop, else hf, else the first."""
    for m in ("vanilla", "hf"):
        if m in names:
            return m
    return names[0]


def _config(args, methods) -> dict:
    c = {k: getattr(args, k) for k in ("model", "suite", "num_prompts", "temperature", "top_k", "top_p",
                                       "max_new_tokens", "repeats", "warmup", "seed", "dtype", "device", "threads",
                                       "long_input_tokens", "long_output_tokens")}
    c["lengths"] = args.lengths.split(",") if args.lengths else None
    c["methods"] = {n: s for n, s in methods}
    c["context_method"] = context_method([n for n, _ in methods])
    return c


def _check_resume(out: Path, config: dict, overwrite: bool) -> None:
    meta_path = out / "meta.json"
    if overwrite:
        for name in ("samples.jsonl", "summary.json", "summary.csv", "report.md"):
            (out / name).unlink(missing_ok=True)
        return
    if meta_path.exists() and (out / "samples.jsonl").exists():
        old = json.loads(meta_path.read_text()).get("config", {})
        diff = {k: (old.get(k), config.get(k)) for k in RESUME_KEYS if old.get(k) != config.get(k)}
        if diff:
            raise SystemExit(f"{out} holds a run with a different config {diff}; use another --out or --overwrite")


def finalize(out: Path, samples: list[dict], names: list[str], greedy: bool, model=None,
             prompts: dict | None = None, plots: bool = True) -> dict:
    """Summary (+ logit gaps of greedy mismatches), summary.csv, plots and report.md."""
    summary = R.summarize(samples, names, greedy=greedy)
    if greedy and summary["mismatches"] and model is not None and prompts:
        from mtp.bench import logit_gap_at_divergence

        cells = {R.cell_key(s): s for s in samples}
        gaps = {}
        for mm in summary["mismatches"]:
            key = (mm["method"], mm["prompt_id"], mm["turn"], mm["repeat"])
            ref = cells.get((mm["baseline"], mm["prompt_id"], mm["turn"], mm["repeat"])) or \
                cells.get((mm["baseline"], mm["prompt_id"], mm["turn"], 0))
            pids = prompts.get((mm["prompt_id"], mm["turn"]))
            if ref is None or pids is None:
                continue
            pos, gap = logit_gap_at_divergence(model, pids, cells[key]["output_ids"], ref["output_ids"])
            gaps[key] = gap if pos is not None else None
        summary = R.summarize(samples, names, greedy=greedy, baseline=summary["baseline"], mismatch_gaps=gaps)
    R.write_summary(out, summary)
    if plots:
        R.write_plots(out)
    R.write_report(out)
    return summary


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods_spec = parse_methods(args.methods)
    config = _config(args, methods_spec)
    _check_resume(out, config, args.overwrite)

    from mtp.bench import MethodSpecError, make_method

    model, tok = load_target(args)
    methods = []
    for name, spec in methods_spec:
        try:
            m = make_method(spec, model, tok)
        except MethodSpecError as e:
            raise SystemExit(f"error: {e}") from None
        m.name = name
        methods.append(m)
    names = [m.name for m in methods]
    keys = {m.name: m.key for m in methods}
    items = load_suite(args.suite, args.num_prompts)
    if args.lengths:
        items = with_lengths(items, config["lengths"], long_input_tokens=args.long_input_tokens,
                             short_output_tokens=args.max_new_tokens, long_output_tokens=args.long_output_tokens)
    meta = collect_meta(config, model)
    meta["num_items"] = len(items)
    R.atomic_write_json(out / "meta.json", meta)

    samples_path = out / "samples.jsonl"
    R.repair_jsonl(samples_path)
    all_samples = R.read_jsonl(samples_path)
    # A cell is reused only when the same method (spec, and heads weights) produced it.
    stale = [s for s in all_samples if s["method"] in keys and s.get("method_key") != keys[s["method"]]]
    if stale:
        changed = sorted({s["method"] for s in stale})
        print(f"[bench] {len(stale)} cells of {changed} were made by another spec or other head weights: "
              "dropped, they run again", file=sys.stderr)
        keep = [s for s in all_samples if s not in stale]
        R.atomic_write_text(samples_path, "".join(json.dumps(R._jsonable(s)) + "\n" for s in keep))
        all_samples = keep
    samples = [s for s in all_samples if s["method"] in names]
    done = {R.cell_key(s) for s in samples}
    todo = sum(len(it.turns) for it in items) * args.repeats * len(methods) - len(done)
    print(f"[bench] {len(items)} prompts x {args.repeats} repeats x {len(methods)} methods; "
          f"{len(done)} cells done, {todo} to run -> {out}", file=sys.stderr)
    gen = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    ctx_name = config["context_method"]
    prompts: dict[tuple[str, int], list[int]] = {}
    interrupted = False
    wb = init_wandb(args.wandb, args.wandb_project, meta, out, name=out.name)
    try:
        if todo > 0 and items:
            warm_ids = encode_turn(tok, items[0], 0)
            for _ in range(args.warmup):
                for m in methods:
                    m.run(warm_ids, max_new_tokens=min(16, args.max_new_tokens), seed=args.seed, **gen)
        n_run = 0
        for it in items:
            answers: list[str] = []
            for t in range(len(it.turns)):
                pids = encode_turn(tok, it, t, answers)
                prompts[(it.id, t)] = pids
                for r in range(args.repeats):
                    order = methods[r % len(methods):] + methods[: r % len(methods)]
                    for m in order:
                        if (m.name, it.id, t, r) in done:
                            continue
                        rec = m.run(pids, max_new_tokens=it.max_new_tokens or args.max_new_tokens,
                                    seed=cell_seed(args.seed, it.id, t, r), **gen)
                        s = {"method": m.name, "method_key": m.key, "prompt_id": it.id, "category": it.category, "turn": t, "repeat": r,
                             "output_ids": rec.output_ids, "new_tokens": rec.new_tokens,
                             "wall_time_s": rec.wall_time_s, "target_forwards": rec.target_forwards,
                             "accept_lengths": rec.accept_lengths, "draft_lengths": rec.draft_lengths,
                             "draft_depths": rec.draft_depths, "draft_time_s": rec.draft_time_s,
                             "length": it.length, "prompt_tokens": len(pids),
                             "max_new_tokens": it.max_new_tokens or args.max_new_tokens}
                        R.append_jsonl(samples_path, s)
                        samples.append(s)
                        done.add(R.cell_key(s))
                        n_run += 1
                        if n_run % 20 == 0:
                            print(f"[bench] {n_run}/{todo} cells", file=sys.stderr)
                if t + 1 < len(it.turns):  # later turns carry the context method's own answer
                    prev = next(s for s in samples if R.cell_key(s) == (ctx_name, it.id, t, 0))
                    answers.append(tok.decode(prev["output_ids"], skip_special_tokens=True))
    except KeyboardInterrupt:
        interrupted = True
        print("[bench] interrupted: summarizing the finished cells", file=sys.stderr)
    except Exception:
        print("[bench] a method failed: summarizing the finished cells before re-raising", file=sys.stderr)
        finalize(out, samples, names, args.temperature <= 0, plots=False)
        raise
    summary = finalize(out, samples, names, args.temperature <= 0, model, prompts, plots=not args.no_plots)
    overall = {m: {k: e["overall"][k] for k in R.SUMMARY_KEYS} for m, e in summary["methods"].items()}
    wb.log({f"{m}/{k}": v for m, d in overall.items() for k, v in d.items() if isinstance(v, (int, float))})
    log_table(wb, "summary", R.summary_rows(summary))
    wb.finish()
    print(json.dumps(R._jsonable({"out": str(out), "baseline": summary["baseline"], "overall": overall})))
    if interrupted:
        return 130
    if args.strict_exact is not None:
        bad = [mm for mm in summary["mismatches"] if mm["logit_gap"] is None or abs(mm["logit_gap"]) > args.strict_exact]
        if bad:
            print(f"[bench] {len(bad)} greedy mismatches above logit gap {args.strict_exact}: {bad[:5]}",
                  file=sys.stderr)
            return 1
    return 0


@cli_main
def main(argv=None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
