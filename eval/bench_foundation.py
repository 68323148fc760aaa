"""The foundation benchmark (issue 2): the kit's plain loop vs HF `generate`, and the kit's prompt
lookup vs HF prompt lookup, on a real model at batch 1, greedy, in bf16 and fp32.

    python -m eval.bench_foundation --model smollm2-135m [--num-prompts 20] [--repeats 3]

Methods run interleaved per prompt (order rotated each repeat) after warm-up; speedup is the ratio
of mean per-prompt tokens/s (Spec-Bench), per repeat, reported as median [min, max] over repeats.
Greedy exactness: in fp32 every method must equal `vanilla` token for token; in bf16 the
exact-match rate and the logit gap at the first divergence are reported. Prints a table, then a
final JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from mtp.bench import interleaved, logit_gap_at_divergence, make_method
from mtp.cli import cli_main
from mtp.models import load_model
from mtp.results import exact_match, per_prompt_tokens_per_s, spec_stats, speedup_per_repeat

# Short chat prompts; several quote text back so prompt lookup has something to copy.
PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Write a haiku about autumn leaves.",
    "Explain what a hash table is to a beginner.",
    "Give me three tips for better sleep.",
    "Translate to French: 'The weather is nice today and we are going to the park.'",
    "Summarize: The city council met on Tuesday to discuss the new park. The park will have a playground, "
    "a pond and walking trails. Construction starts in May and should finish by the end of the year.",
    "Fix the bug in this Python function and return the corrected code:\n"
    "def add_all(xs):\n    total = 0\n    for x in xs:\n        total =+ x\n    return total",
    "Rewrite this sentence in the passive voice: 'The cat chased the mouse across the kitchen floor.'",
    "List the planets of the solar system in order from the sun.",
    "What is 17 times 23? Show your steps.",
    "Write a short email asking a colleague to review my pull request by Friday.",
    "Extract the names from this text: 'Alice met Bob at the station, and later they had lunch with Carol.'",
    "Convert this list to a comma-separated string: apples, bananas, cherries, dates, elderberries.",
    "Repeat the following sentence exactly twice: 'Small models can draft tokens for large models.'",
    "Write a Python function that returns the factorial of n.",
    "What causes the seasons on Earth?",
    "Correct the spelling in: 'Thiss sentense has sum speling misteaks in it.'",
    "Describe the water cycle in four steps.",
    "Write a SQL query that selects the names of all users older than 30 from a table called users.",
    "Give a one-paragraph biography of Ada Lovelace.",
]


def chat_ids(tok, text: str) -> list[int]:
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                       return_dict=True)["input_ids"]
    return tok(text)["input_ids"]


def run_dtype(name: str, dtype: torch.dtype, args) -> dict:
    model, tok = load_model(name, dtype=dtype)
    prompts = [chat_ids(tok, p) for p in PROMPTS[: args.num_prompts]]
    methods = [make_method(s, model, tok) for s in args.methods]
    samples = [rec.as_sample(i, r) for i, r, rec in interleaved(methods, prompts, repeats=args.repeats,
                                                                 warmup=args.warmup, max_new_tokens=args.max_new_tokens)]
    names = [m.name for m in methods]
    base = "vanilla"
    metrics = speed_metrics(samples, names, base)
    outputs = {(s["method"], int(s["prompt_id"])): s["output_ids"] for s in samples if s["repeat"] == 0}
    rows = {}
    for n in names:
        _, mismatches = exact_match(first_repeat(samples, n), first_repeat(samples, base))
        gaps = []
        for mm in mismatches:
            i = int(mm["prompt_id"])
            pos, gap = logit_gap_at_divergence(model, prompts[i], outputs[(n, i)], outputs[(base, i)])
            gaps.append({"prompt": i, "position": pos, "logit_gap": round(gap, 4)})
        m = metrics[n]
        rows[n] = {
            "tokens_per_s_median": m["tokens_per_s"],
            "speedup_vs_vanilla_median": m["speedup"],
            "speedup_spread": m["speedup_spread"],
            "tau": m["tau"],
            "draft_acceptance_rate": m["draft_acceptance_rate"],
            "new_tokens": m["new_tokens"],
            "exact_match_vs_vanilla": m["exact_match"],
            "divergences": gaps,
        }
    hf_over_vanilla = list(speedup_per_repeat(by_method(samples, "hf"), by_method(samples, "vanilla")).values()) \
        if "hf" in names else []
    return {"rows": rows, "hf_over_vanilla": hf_over_vanilla}


def by_method(samples: list[dict], name: str) -> list[dict]:
    return [s for s in samples if s["method"] == name]


def first_repeat(samples: list[dict], name: str) -> list[dict]:
    return [s for s in samples if s["method"] == name and s["repeat"] == 0]


def speed_metrics(samples: list[dict], names: list[str], base: str) -> dict[str, dict]:
    """Per method, with the metrics of mtp.results (defined once): median over repeats of the
    mean per-prompt tokens/s, speedup over `base` (median and [min, max] over repeats), and the
    first repeat's tau, draft acceptance rate, new tokens and greedy exact-match rate."""
    out = {}
    for n in names:
        tps = [statistics.fmean(v.values()) for v in per_prompt_tokens_per_s(by_method(samples, n)).values()]
        sp = list(speedup_per_repeat(by_method(samples, n), by_method(samples, base)).values())
        first = spec_stats(first_repeat(samples, n))
        out[n] = {
            "tokens_per_s": statistics.median(tps),
            "speedup": statistics.median(sp), "speedup_spread": [min(sp), max(sp)],
            "tau": first.tau,
            "draft_acceptance_rate": first.draft_acceptance_rate if first.drafted else None,
            "new_tokens": first.new_tokens,
            "exact_match": exact_match(first_repeat(samples, n), first_repeat(samples, base))[0],
        }
    return out


@cli_main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtypes", default="bf16,fp32")
    ap.add_argument("--methods", default="hf,vanilla,hf-pld,pld")
    ap.add_argument("--num-prompts", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    args.methods = args.methods.split(",")
    if "vanilla" not in args.methods:
        args.methods.insert(0, "vanilla")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"model": args.model, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
              "num_prompts": min(args.num_prompts, len(PROMPTS)), "threads": torch.get_num_threads(),
              "device": "cuda" if torch.cuda.is_available() else "cpu", "by_dtype": {}}
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    for d in args.dtypes.split(","):
        res = run_dtype(args.model, dtypes[d], args)
        result["by_dtype"][d] = res
        print(f"\n== {args.model} {d}  (batch 1, greedy, {args.max_new_tokens} new tokens, "
              f"{result['num_prompts']} prompts x {args.repeats} repeats)")
        print(f"{'method':10s} {'tok/s':>8s} {'speedup':>8s} {'spread':>14s} {'tau':>6s} {'accept':>7s} {'exact':>6s}")
        for n, row in res["rows"].items():
            acc = f"{row['draft_acceptance_rate']:.3f}" if row["draft_acceptance_rate"] is not None else "-"
            lo, hi = row["speedup_spread"]
            print(f"{n:10s} {row['tokens_per_s_median']:8.1f} {row['speedup_vs_vanilla_median']:8.3f} "
                  f"[{lo:5.3f},{hi:5.3f}] {row['tau']:6.3f} {acc:>7s} {row['exact_match_vs_vanilla']:6.2f}")
            for g in row["divergences"]:
                print(f"    diverges: prompt {g['prompt']} at token {g['position']}, logit gap {g['logit_gap']}")
    fp32 = result["by_dtype"].get("fp32")
    if fp32:
        result["fp32_greedy_exact"] = all(r["exact_match_vs_vanilla"] == 1.0 for r in fp32["rows"].values())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
