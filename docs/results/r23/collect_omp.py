"""Round 23: the same T=0 benchmark under OMP_WAIT_POLICY=PASSIVE, ACTIVE and OpenMP's default (omp.sh):
tokens/s, speedup over the faster of hf and vanilla, tau and draft cost per method and run.
From the project root:  python docs/results/r23/collect_omp.py [results/r23-omp]"""
import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "results/r23-omp")
rows = []
for s in sorted(root.glob("*/t0/summary.json")):
    policy, run = s.parts[-3].rsplit("-", 1)
    m = json.loads(s.read_text())["methods"]
    base = max(m[b]["overall"]["tokens_per_s"] for b in ("hf", "vanilla") if b in m)
    for name, v in m.items():
        o = v["overall"]
        rows.append({"policy": policy, "run": int(run), "method": name, "tau": o["tau"],
                     "tokens_per_s": o["tokens_per_s"], "speedup": o["tokens_per_s"] / base,
                     "draft_cost": o.get("draft_cost")})
methods = list(dict.fromkeys(r["method"] for r in rows))
policies = [p for p in ("PASSIVE", "DEFAULT", "ACTIVE") if any(r["policy"] == p for r in rows)]
print("| method | tau | " + " | ".join(f"{p}: tok/s | {p}: speedup" for p in policies) + " | draft cost |")
print("|---|---|" + "---|---|" * len(policies) + "---|")
for name in methods:
    cells, dc = [], []
    for p in policies:
        rs = [r for r in rows if r["method"] == name and r["policy"] == p]
        cells += [" / ".join(f"{r['tokens_per_s']:.1f}" for r in rs), " / ".join(f"{r['speedup']:.2f}x" for r in rs)]
        dc += [f"{r['draft_cost']:.2f}" for r in rs if r["draft_cost"] is not None]
    tau = " / ".join(sorted({f"{r['tau']:.2f}" for r in rows if r["method"] == name}))
    print(f"| {name} | {tau} | " + " | ".join(cells) + f" | {min(dc) + '-' + max(dc) if dc else '-'} |")
print(json.dumps({"rows": rows}))
