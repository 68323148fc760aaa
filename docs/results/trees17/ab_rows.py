"""A/B: a batch's head trees expanded per row (one head call per depth) against the per-path
fallback (the head's whole-batch chain once per node per row), same process, interleaved.

    python docs/results/trees17/ab_rows.py --heads runs/full-hydra/hydra/best --batch-sizes 2,4,8

Prints a table and a final JSON line: per batch size, median wall time and drafting time of each
arm, and whether both arms' outputs are identical.
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from mtp import generate, load_model
from mtp.heads import load_heads
from mtp.suites import encode_turn, load_suite
from mtp.tree import DynamicTreeConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--heads", required=True)
    ap.add_argument("--batch-sizes", default="2,4,8")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    model, tok = load_model(a.model, dtype="bf16")
    heads = load_heads(a.heads, model)
    sizes = [int(b) for b in a.batch_sizes.split(",")]
    prompts = [encode_turn(tok, it, 0) for it in load_suite("spec", max(sizes))]
    tree = DynamicTreeConfig(total_tokens=16, depth=3, top_k=6)
    rows = []
    for B in sizes:
        res = {True: [], False: []}
        outs = {}
        for r in range(a.repeats + 1):  # the first round is a warm-up
            for arm in (True, False):
                heads.tree_expander_rows = arm
                o = generate(model, prompts[:B], drafter=heads.as_drafter(tree=tree), num_draft_tokens=3,
                             max_new_tokens=a.max_new_tokens, ignore_eos=True)
                outs[arm] = o.tokens
                if r:
                    res[arm].append((o.stats.wall_time_s, o.stats.draft_time_s, o.stats.tau))
        row = {"batch_size": B, "identical": outs[True] == outs[False]}
        for arm, name in ((True, "per_row"), (False, "per_path")):
            row[f"{name}_wall_s"] = statistics.median(x[0] for x in res[arm])
            row[f"{name}_draft_s"] = statistics.median(x[1] for x in res[arm])
            row[f"{name}_spread_s"] = max(x[0] for x in res[arm]) - min(x[0] for x in res[arm])
        row["tau"] = res[True][0][2]
        row["speedup"] = row["per_path_wall_s"] / row["per_row_wall_s"]
        rows.append(row)
        print(f"B={B}: per row {row['per_row_wall_s']:.2f} s (drafting {row['per_row_draft_s']:.2f}), per path "
              f"{row['per_path_wall_s']:.2f} s (drafting {row['per_path_draft_s']:.2f}), x{row['speedup']:.2f}, "
              f"tau {row['tau']:.2f}, identical {row['identical']}", flush=True)
    del heads.tree_expander_rows
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
