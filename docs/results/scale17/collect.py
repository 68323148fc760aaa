"""The table in scale.md, from the held-out scores in this folder (eval-<run>-<file>.json, the last
line of `python -m train.heads --config <run>/config.yaml --eval-only data.eval=<file>`) and each
run's metrics.jsonl (training-batch expected tau over its last 50 steps).

    python docs/results/scale17/collect.py
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
RUNS = [  # (label, run folder, answer tokens it trained on, steps)
    ("1x, 600 steps (runs/full-hydra/hydra)", "runs/full-hydra/hydra", "116k", 600),
    ("1x, 1,200 steps", "runs/scale/hydra-1x-s1200", "116k", 1200),
    ("2x, 600 steps", "runs/scale/hydra-2x-s600", "241k", 600),
    ("2x, 1,200 steps", "runs/scale/hydra-2x-s1200", "241k", 1200),
    ("2x, 2,400 steps (round 18)", "runs/scale/hydra-2x-s2400", "241k", 2400),
]


def train_tau(run: str, steps: int) -> float | None:
    p = Path(run) / "metrics.jsonl"
    if not p.is_file():
        return None
    xs = [r["train/expected_tau"] for r in map(json.loads, p.read_text().splitlines())
          if "train/expected_tau" in r and r["step"] > steps - 50]
    return sum(xs) / len(xs) if xs else None


def main() -> None:
    rows, out = [], {}
    for label, run, tokens, steps in RUNS:
        name = Path(run).name
        ev = {f: json.loads((HERE / f"eval-{name}-{f}.json").read_text()) for f in ("1x", "2x")
              if (HERE / f"eval-{name}-{f}.json").is_file()}
        if not ev:
            continue
        cell = {f: f"{e['eval/expected_tau']:.3f} (a_1 {e['eval/a_1']:.3f})" for f, e in ev.items()}
        tt = train_tau(run, steps)
        rows.append(f"| {label} | {tokens} | {cell.get('1x', '-')} | {cell.get('2x', '-')} | "
                    f"{'-' if tt is None else f'{tt:.2f}'} |")
        out[name] = {"tokens": tokens, "steps": steps, "train_expected_tau": tt,
                     **{f"heldout_{f}": {k: e[k] for k in ("eval/expected_tau", "eval/a_1", "eval/a_2", "eval_examples", "step")}
                        for f, e in ev.items()}}
    table = ["| Hydra head | training answer tokens | held-out 1x (67 answers): expected tau (a_1) | "
             "held-out 2x (145 answers) | training-batch expected tau, last 50 steps |", "|---|---|---|---|---|", *rows]
    (HERE / "scale.md").write_text("\n".join(table) + "\n")
    (HERE / "scale.json").write_text(json.dumps(out, indent=1) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
