"""How much of a held-out split is already in the training split: the share of held-out response
n-grams (token ids) that occur in some training response, next to the same share for a benchmark's
outputs (the text the heads are finally scored on).

    python -m eval.leakage --data runs/full2/distill-passages,runs/full/data/distill --max-examples 1400 \
        --bench results/fam/t0 --out results/leakage

A held-out share far above the benchmark's means held-out acceptance overstates what the heads do
on new prompts (near-duplicate prompts, passage tasks quoting answers that were trained on). The
split is the trainer's (`mtp.data.dataset.split_examples`, same fraction and seed). Prints a table
and a final JSON line; writes leakage.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mtp.cli import cli_main
from mtp.io import atomic_write_json, read_jsonl


def response_ngrams(ids: list[int], mask: list[int], n: int) -> list[tuple[int, ...]]:
    r = [t for t, m in zip(ids, mask) if m]
    return [tuple(r[i:i + n]) for i in range(len(r) - n + 1)]


def seen_share(grams: list[tuple[int, ...]], seen: set) -> float:
    """Share of `grams` in `seen` (nan when there are none)."""
    return sum(g in seen for g in grams) / len(grams) if grams else float("nan")


def bench_outputs(bench_dir: str | Path, method: str) -> list[list[int]]:
    """Output token ids of one method in an eval.bench folder (samples.jsonl), first repeat."""
    rows = read_jsonl(Path(bench_dir) / "samples.jsonl")
    outs = [r["output_ids"] for r in rows if r.get("method") == method and r.get("repeat", 0) == 0]
    if not outs:
        from mtp.data import DataError

        raise DataError(f"{bench_dir}/samples.jsonl has no outputs of method {method!r}; pass --method with one "
                        f"it ran ({sorted({r.get('method') for r in rows})})")
    return outs


@cli_main
def main(argv=None) -> int:
    from mtp.data.dataset import load_examples, split_examples

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="training data as train.heads reads it (folders / JSONL, commas)")
    p.add_argument("--max-examples", type=int, default=0, help="data.max_examples of the run (0: all)")
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--eval-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=8, help="n-gram length in tokens")
    p.add_argument("--bench", default=None, help="an eval.bench folder whose outputs to compare")
    p.add_argument("--method", default="vanilla", help="the bench method whose outputs are used")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    if a.n < 1 or not 0 < a.eval_fraction < 1:
        p.error("need --n >= 1 and 0 < --eval-fraction < 1")
    exs = load_examples(a.data, None, max_seq_len=a.max_seq_len, max_examples=a.max_examples)
    train, held = split_examples(exs, a.eval_fraction, a.seed)
    seen = {g for e in train for g in response_ngrams(e.input_ids, e.loss_mask, a.n)}
    held_grams = [g for e in held for g in response_ngrams(e.input_ids, e.loss_mask, a.n)]
    res = {"data": a.data, "n": a.n, "train_examples": len(train), "held_out_examples": len(held),
           "held_out_seen": seen_share(held_grams, seen), "held_out_ngrams": len(held_grams)}
    if a.bench:
        outs = bench_outputs(a.bench, a.method)
        grams = [g for o in outs for g in response_ngrams(o, [1] * len(o), a.n)]
        res.update(bench=a.bench, method=a.method, bench_seen=seen_share(grams, seen), bench_ngrams=len(grams))
    print(f"| split | {a.n}-grams | share seen in training responses |\n|---|---|---|")
    print(f"| held-out ({len(held)} examples) | {len(held_grams)} | {res['held_out_seen']:.3f} |")
    if a.bench:
        print(f"| {a.bench} ({a.method}) | {res['bench_ngrams']} | {res['bench_seen']:.3f} |")
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(a.out) / "leakage.json", res)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
