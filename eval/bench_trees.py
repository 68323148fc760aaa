"""Trees and batches (issue 5 figures): chain vs static tree vs searched static tree vs dynamic
tree for a heads checkpoint (or prompt lookup), the target's verify cost vs tree size, and a batch
sweep of plain vs speculative decoding.

    python -m eval.bench_trees --model smollm2-135m --heads runs/<run>/best [--num-prompts 10] [--out results/trees]

One results folder (mtp.results): samples.jsonl, summary and report.md of the chain-vs-tree runs
(mtp.bench.SuiteRun on the "foundation" suite, speedup over vanilla); costmodel.json's verify_cost
(mtp.costmodel.measure_forward_cost through the tree-verify path, m = nodes + 1 inputs); sweep.json
(mtp.sweep.batch_sweep); trees.json (top-k acceptance, searched tree, expected tau).

The searched tree comes from the head's measured top-k acceptance (teacher-forced on the
target's own greedy outputs for the first half of the prompts, used on the second half):
acc[d][r] = P(true token d+1 steps ahead is the head's rank-r candidate | the path before is
right), then mtp.tree.best_static_tree under the same node budget as the default static tree.
Prints tables, then a final JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from mtp import results
from mtp.bench import KitMethod, SuiteRun
from mtp.cli import cli_main
from mtp.costmodel import measure_forward_cost
from mtp.engine import generate
from mtp.io import atomic_write_json, jsonable
from mtp.runinfo import collect_meta
from mtp.suites import encode_turn, load_suite
from mtp.sweep import batch_sweep
from mtp.tree import DynamicTreeConfig, StaticTree, best_static_tree

DEFAULT_TREE = StaticTree([(0,), (1,), (2,), (0, 0), (0, 1), (1, 0), (0, 0, 0), (0, 0, 1), (0, 0, 0, 0)])


@torch.no_grad()
def measure_topk_acceptance(model, head, sequences: list[list[int]], depth: int, top: int) -> list[list[float]]:
    """acc[d][r]: fraction of positions where the true token d+2 ahead is the head's rank-r
    candidate (teacher forced: the path before it is the true one)."""
    counts = [[0] * top for _ in range(depth)]
    totals = [0] * depth
    for seq in sequences:
        ids = torch.tensor([seq], device=next(model.parameters()).device)
        hs = model(ids, output_hidden_states=True).hidden_states
        out = head.forward_train({layer: hs[layer] for layer in head.config.hidden_layers}, ids)
        for d, logits in enumerate(out.logits[:depth]):
            T = ids.shape[1] - 2 - d
            if T <= 0:
                continue
            ranks = logits[0, :T].topk(top, -1).indices
            truth = ids[0, 2 + d: 2 + d + T]
            hit = ranks == truth[:, None]
            for r in range(top):
                counts[d][r] += int(hit[:, r].sum())
            totals[d] += T
    return [[c / max(totals[d], 1) for c in counts[d]] for d in range(depth)]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="built-in name, local folder or hub id")
    ap.add_argument("--heads", default=None, help="heads checkpoint folder (default: prompt lookup trees)")
    ap.add_argument("--dtype", default="bf16", help="fp32 | bf16 | fp16")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--num-prompts", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-sizes", default="1,2,4,8")
    ap.add_argument("--tree-sizes", default="1,2,4,8,16,32,64", help="verify cost: tree nodes per forward")
    ap.add_argument("--prefix-len", type=int, default=200, help="cached prefix for the verify cost")
    ap.add_argument("--out", default="results/trees")
    ap.add_argument("--no-plots", action="store_true")
    return ap.parse_args(argv)


def tree_drafters(args, model, tok, calib: list[list[int]], info: dict) -> tuple[dict, object]:
    """({method name: drafter or None}, the chain drafter the batch sweep uses); `info` gets the
    heads' top-k acceptance, the searched tree and the expected tau of each shape."""
    if not args.heads:
        from mtp.drafters import PromptLookupDrafter

        return ({"vanilla": None, "chain": PromptLookupDrafter(8), "ngram-tree": PromptLookupDrafter(8, branches=4)},
                PromptLookupDrafter(8))
    from mtp.heads import load_heads

    head = load_heads(args.heads, model)
    K = head.config.num_heads
    seqs = [p + generate(model, p, max_new_tokens=args.max_new_tokens).tokens[0] for p in calib]
    acc = measure_topk_acceptance(model, head, seqs, min(K, 4), 4)
    searched = best_static_tree(acc, DEFAULT_TREE.size)
    info.update(topk_acceptance=acc, searched_tree=[list(c) for c in searched.choices],
                expected_tau={"chain": StaticTree.chain(K).expected_accept_length(acc),
                              "static": DEFAULT_TREE.expected_accept_length(acc),
                              "searched": searched.expected_accept_length(acc)})
    dynamic = DynamicTreeConfig(total_tokens=16, depth=min(K, 4) if head.max_draft_tokens else 5, top_k=4)
    return ({"vanilla": None, "chain": head.as_drafter(), "static-tree": head.as_drafter(tree=DEFAULT_TREE),
             "searched-tree": head.as_drafter(tree=searched), "dynamic-tree": head.as_drafter(tree=dynamic)},
            head.as_drafter())


def print_tables(result: dict, overall: dict, args) -> None:
    print(f"\n== {args.model} {args.dtype}: chains vs trees ({result['num_prompts']} prompts x {args.repeats} "
          f"repeats, greedy) -> {args.out}")
    print(f"{'method':14s} {'tau':>6s} {'tok/s':>8s} {'speedup':>8s} {'exact':>6s}")
    for n, o in overall.items():
        print(f"{n:14s} {o['tau']:6.3f} {o['tokens_per_s']:8.1f} {o['speedup']:8.3f} {o['exact_match']:6.2f}")
    if "expected_tau" in result:
        print("expected tau from top-k acceptance:", {k: round(v, 3) for k, v in result["expected_tau"].items()})
    cost = result["verify_cost_s"]
    first = cost[min(cost)]
    print(f"\nverify cost (prefix {args.prefix_len}): "
          + ", ".join(f"{n}: {1000 * t:.1f} ms ({t / first:.2f}x)" for n, t in cost.items()))
    print("\nbatch sweep:")
    for p in result["batch_sweep"]:
        print(f"  batch {p['batch_size']:2d} {p['label']:12s} total {p['tokens_per_s_total']:7.1f} tok/s, "
              f"per sequence {p['tokens_per_s_per_seq']:6.1f} tok/s, tau {p['tau']:.2f}")


@cli_main
def main(argv=None) -> int:
    from mtp.models import load_model

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    model, tok = load_model(args.model, dtype=args.dtype, device=args.device)
    items = load_suite("foundation")
    calib, test = items[: len(items) // 2], items[len(items) // 2:][: args.num_prompts]
    result = {"model": args.model, "heads": args.heads, "dtype": args.dtype, "max_new_tokens": args.max_new_tokens,
              "repeats": args.repeats, "num_prompts": len(test)}
    drafters, chain = tree_drafters(args, model, tok, [encode_turn(tok, it, 0) for it in calib], result)
    config = {**result, "suite": "foundation", "temperature": 0.0, "methods": {n: n for n in drafters},
              "title": f"Chains vs trees: {args.model} {args.dtype}"}
    results.check_resume(out, config, (), overwrite=True)  # the methods are objects, not specs: a fresh run
    atomic_write_json(out / "meta.json", collect_meta(config, model))
    bench = SuiteRun(out, [KitMethod(n, model, tok, d) for n, d in drafters.items()], test, tok,
                     repeats=args.repeats, warmup=1, max_new_tokens=args.max_new_tokens)
    bench.run()
    sizes = [int(s) for s in args.tree_sizes.split(",")]
    cost = measure_forward_cost(model, args.prefix_len, [n + 1 for n in sizes], tree=True)
    result["verify_cost_s"] = {n: cost[n + 1] for n in sizes}
    atomic_write_json(out / "costmodel.json", {"prefix_len": args.prefix_len, "methods": [], "verify_cost": [
        {"tokens": n + 1, "nodes": n, "ms": 1e3 * cost[n + 1], "ms_per_token": 1e3 * cost[n + 1] / (n + 1)}
        for n in sizes]})
    points, skipped = batch_sweep(model, [("plain", None, None), ("speculative", chain, None)],
                                  [encode_turn(tok, it, 0) for it in test],
                                  [int(b) for b in args.batch_sizes.split(",")], repeats=args.repeats,
                                  max_new_tokens=args.max_new_tokens)
    result["batch_sweep"] = points
    atomic_write_json(out / "sweep.json", {"points": points, "skipped": skipped})
    atomic_write_json(out / "trees.json", result)
    summary = bench.finalize(model, plots=not args.no_plots, baseline="vanilla")  # + report.md of it all
    print_tables(result, {m: e["overall"] for m, e in summary["methods"].items()}, args)
    print(json.dumps(jsonable({"out": str(out), **result})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
