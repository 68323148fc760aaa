"""Round 22's table: each arm's loss weights and held-out expected tau (chain of 3) and first-head
acceptance on the left-out prompts answered greedily (T=0: top-1 agreement) and sampled at T=1
(sum_x min(p, q)).
    python docs/results/r22/collect.py [OUT=runs/r22] [RUNS=runs/demo]"""
import json
import sys
from pathlib import Path

out, runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/r22"), Path(sys.argv[2] if len(sys.argv) > 2 else "runs/demo")
rows = []
for f in sorted(out.glob("*.heldout.json")):
    name = f.name[: -len(".heldout.json")]
    t0, t1 = json.loads(f.read_text()), json.loads(f.with_name(f"{name}.heldout-t1.json").read_text())
    cfg = json.loads((runs / ("hydra" if name == "demo" else name) / "config.json").read_text())
    loss = cfg["loss"]
    rows.append({"arm": name, "ce_weight": loss["ce_weight"], "kl_weight": loss["kl_weight"],
                 "tv_weight": loss.get("tv_weight", 0.0), "steps": cfg["optim"]["max_steps"],
                 "heldout_t0_expected_tau": t0["eval/expected_tau"], "heldout_t0_a1": t0["eval/a_1"],
                 "heldout_t1_expected_tau": t1["eval/expected_tau"], "heldout_t1_a1": t1["eval/a_1"],
                 "heldout_t0_examples": t0["eval_examples"], "heldout_t1_examples": t1["eval_examples"]})
here = Path(__file__).parent
(here / "levers.json").write_text(json.dumps(rows, indent=1) + "\n")
lines = ["| arm | CE / KL / TV weights | steps | held-out T=0 exp. tau | T=0 a_1 | held-out T=1 exp. tau | T=1 a_1 |",
         "|---|---|---|---|---|---|---|"]
for r in rows:
    lines.append(f"| {r['arm']} | {r['ce_weight']:g} / {r['kl_weight']:g} / {r['tv_weight']:g} | {r['steps']} | "
                 f"{r['heldout_t0_expected_tau']:.3f} | {r['heldout_t0_a1']:.3f} | "
                 f"{r['heldout_t1_expected_tau']:.3f} | {r['heldout_t1_a1']:.3f} |")
(here / "levers.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
