"""Write a training data set's held-out split (the records the trainer holds out) to one JSONL file,
so heads trained on other data can be scored on the same answers:

    python docs/results/scale17/heldout.py --data runs/full-hydra/data/distill,runs/full-hydra/data/distill-passages \
        --out runs/data2/heldout-1x.jsonl
    python -m train.heads --config <run's config> --eval-only data.eval=runs/data2/heldout-1x.jsonl

The split is mtp.data.dataset.split_examples over the examples as the trainer loads them
(max_seq_len, eval_fraction and seed as in the recipe).
"""
from __future__ import annotations

import argparse
import json
from mtp.data.dataset import load_examples, split_examples
from mtp.data.distill import load_distilled
from mtp.io import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="data.train of the run whose held-out split is wanted")
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--eval-fraction", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    ex = load_examples(a.data, None, max_seq_len=a.max_seq_len)
    recs = load_distilled(a.data)
    if len(recs) != len(ex):
        raise SystemExit(f"{len(recs)} records but {len(ex)} examples: some were dropped on loading; "
                         "this script needs them one to one")
    where = {id(e): i for i, e in enumerate(ex)}
    held = split_examples(ex, a.eval_fraction, a.seed)[1]
    atomic_write_text(a.out, "".join(json.dumps(recs[where[id(e)]]) + "\n" for e in held))
    print(json.dumps({"out": a.out, "examples": len(ex), "held_out": len(held),
                      "held_out_tokens": sum(sum(e.loss_mask) for e in held)}))


if __name__ == "__main__":
    main()
