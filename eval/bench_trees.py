"""Trees and batches (issue 5 figures): chain vs static tree vs searched static tree vs dynamic
tree for a heads checkpoint (or prompt lookup), the target's verify cost vs tree size, and a batch
sweep of plain vs speculative decoding.

    python -m eval.bench_trees --model smollm2-135m --heads runs/<run>/best [--num-prompts 10]

The searched tree comes from the head's measured top-k acceptance (teacher-forced on the
target's own greedy outputs for the first half of the prompts, used on the second half):
acc[d][r] = P(true token d+1 steps ahead is the head's rank-r candidate | the path before is
right), then mtp.tree.best_static_tree under the same node budget as the default static tree.
Speedup: mean per-prompt tokens/s over vanilla's, interleaved per prompt, median over repeats.
Prints tables, then a final JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from eval.bench_foundation import PROMPTS, chat_ids, speed_metrics
from mtp.bench import KitMethod, interleaved
from mtp.cli import cli_main
from mtp.engine import generate
from mtp.kv import KVState
from mtp.models import load_model
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


@torch.no_grad()
def verify_cost(model, prefix: int, sizes: list[int], reps: int = 7) -> dict[int, float]:
    """Median seconds of one target forward over a tree of n nodes (a chain-shaped mask of n
    inputs; the cost depends on n, not the shape) after a prefix."""
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    ctx = torch.randint(10, model.config.vocab_size, (1, prefix), generator=g).to(dev)
    res = {}
    for n in sizes:
        times = []
        for _ in range(reps + 1):
            kv = KVState(model, 1, dev)
            kv.forward(ctx)
            ids = torch.randint(10, model.config.vocab_size, (1, n + 1), generator=g).to(dev)
            parents = torch.arange(-1, n - 1, device=dev)[None]
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            kv.forward_tree(ids, parents, torch.tensor([n], device=dev))
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        res[n] = statistics.median(times[1:])
    return res


def speed_table(model, tok, methods: dict[str, object], prompts, args) -> dict:
    kit = [KitMethod(name, model, tok, d) for name, d in methods.items()]
    samples = [rec.as_sample(i, r) for i, r, rec in interleaved(kit, prompts, repeats=args.repeats, warmup=1,
                                                                 max_new_tokens=args.max_new_tokens)]
    return speed_metrics(samples, list(methods), "vanilla")


def batch_sweep(model, drafter_factory, prompts, sizes, max_new_tokens) -> list[dict]:
    rows = []
    for bs in sizes:
        batch = [prompts[i % len(prompts)] for i in range(bs)]
        for name, make in (("plain", lambda: None), ("speculative", drafter_factory)):
            generate(model, batch, drafter=make(), max_new_tokens=8)  # warm-up at this batch size (CUDA kernels)
            t0 = time.perf_counter()
            out = generate(model, batch, drafter=make(), max_new_tokens=max_new_tokens)
            dt = time.perf_counter() - t0
            toks = sum(len(t) for t in out.tokens)
            rows.append({"batch": bs, "method": name, "total_tokens_per_s": toks / dt,
                         "tokens_per_s_per_seq": toks / dt / bs, "tau": out.stats.tau})
    return rows


@cli_main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--heads", default=None, help="heads checkpoint folder (default: prompt lookup trees)")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--num-prompts", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-sizes", default="1,2,4,8")
    ap.add_argument("--tree-sizes", default="1,2,4,8,16,32,64")
    args = ap.parse_args()
    model, tok = load_model(args.model, dtype={"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype])
    prompts = [chat_ids(tok, p) for p in PROMPTS]
    calib, test = prompts[: len(prompts) // 2], prompts[len(prompts) // 2:][: args.num_prompts]
    result = {"model": args.model, "heads": args.heads, "dtype": args.dtype, "max_new_tokens": args.max_new_tokens,
              "repeats": args.repeats, "num_prompts": len(test), "device": str(next(model.parameters()).device),
              "threads": torch.get_num_threads()}
    if args.heads:
        from mtp.heads import load_heads

        head = load_heads(args.heads, model)
        K = head.config.num_heads
        seqs = [p + generate(model, p, max_new_tokens=args.max_new_tokens).tokens[0] for p in calib]
        acc = measure_topk_acceptance(model, head, seqs, min(K, 4), 4)
        searched = best_static_tree(acc, DEFAULT_TREE.size)
        result["topk_acceptance"] = acc
        result["searched_tree"] = [list(c) for c in searched.choices]
        result["expected_tau"] = {"chain": StaticTree.chain(K).expected_accept_length(acc),
                                  "static": DEFAULT_TREE.expected_accept_length(acc),
                                  "searched": searched.expected_accept_length(acc)}
        methods = {"vanilla": None, "chain": head.as_drafter(),
                   "static-tree": head.as_drafter(tree=DEFAULT_TREE),
                   "searched-tree": head.as_drafter(tree=searched),
                   "dynamic-tree": head.as_drafter(tree=DynamicTreeConfig(total_tokens=16, depth=min(K, 4) if head.max_draft_tokens else 5, top_k=4))}
        factory = head.as_drafter
    else:
        from mtp.drafters import PromptLookupDrafter

        methods = {"vanilla": None, "chain": PromptLookupDrafter(8), "ngram-tree": PromptLookupDrafter(8, branches=4)}
        factory = lambda: PromptLookupDrafter(8)  # noqa: E731
    result["speed"] = speed_table(model, tok, methods, test, args)
    print(f"\n== {args.model} {args.dtype}: chains vs trees ({len(test)} prompts x {args.repeats} repeats, greedy)")
    print(f"{'method':14s} {'tau':>6s} {'tok/s':>8s} {'speedup':>8s} {'spread':>14s} {'exact':>6s}")
    for n, row in result["speed"].items():
        print(f"{n:14s} {row['tau']:6.3f} {row['tokens_per_s']:8.1f} {row['speedup']:8.3f} "
              f"[{row['speedup_spread'][0]:.3f},{row['speedup_spread'][1]:.3f}] {row['exact_match']:6.2f}")
    if "expected_tau" in result:
        print("expected tau from top-k acceptance:", {k: round(v, 3) for k, v in result["expected_tau"].items()})
    sizes = [int(s) for s in args.tree_sizes.split(",")]
    cost = verify_cost(model, 200, sizes)
    result["verify_cost_s"] = cost
    print("\nverify cost (prefix 200): " + ", ".join(f"{n}: {1000 * t:.1f} ms ({t / cost[sizes[0]]:.2f}x)" for n, t in cost.items()))
    sweep = batch_sweep(model, factory, test, [int(b) for b in args.batch_sizes.split(",")], args.max_new_tokens)
    result["batch_sweep"] = sweep
    print("\nbatch sweep:")
    for row in sweep:
        print(f"  batch {row['batch']:2d} {row['method']:12s} total {row['total_tokens_per_s']:7.1f} tok/s, "
              f"per sequence {row['tokens_per_s_per_seq']:6.1f} tok/s, tau {row['tau']:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
