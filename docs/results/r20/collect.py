"""Round 20's levers table: held-out expected tau (chain of 3, T=0) and first-head top-1, with the
last training batch's top-1 beside it (how far the head fits what it saw)."""
import json
import sys
from pathlib import Path

out, runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/r20"), Path(sys.argv[2] if len(sys.argv) > 2 else "runs/demo")
rows = []
for f in sorted(out.glob("*.heldout.json")):
    name = f.name[: -len(".heldout.json")]
    ev = json.loads(f.read_text())
    run = runs / ("hydra" if name == "demo" else name)
    cfg = json.loads((run / "config.json").read_text())
    train = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"train/top1_0"' in x]
    rows.append({"arm": name, "steps": cfg["optim"]["max_steps"], "lr": cfg["optim"]["lr"],
                 "weight_decay": cfg["optim"]["weight_decay"], "feature_noise": cfg["data"].get("feature_noise", 0.0),
                 "heldout_expected_tau": ev["eval/expected_tau"], "heldout_top1_0": ev["eval/top1_0"],
                 "heldout_a1": ev["eval/a_1"], "train_top1_0_last": train[-1]["train/top1_0"] if train else None})
here = Path(__file__).parent
(here / "levers.json").write_text(json.dumps(rows, indent=1) + "\n")
lines = ["| arm | steps | lr | wd | noise | held-out exp. tau | held-out top-1 (head 0) | last train batch top-1 |",
         "|---|---|---|---|---|---|---|---|"]
for r in rows:
    tr = f"{r['train_top1_0_last']:.2f}" if r["train_top1_0_last"] is not None else "-"
    lines.append(f"| {r['arm']} | {r['steps']} | {r['lr']:g} | {r['weight_decay']:g} | {r['feature_noise']:g} | "
                 f"{r['heldout_expected_tau']:.3f} | {r['heldout_top1_0']:.3f} | {tr} |")
(here / "levers.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
