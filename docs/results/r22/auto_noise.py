"""How stable is `:auto`'s choice of K? The demo's Hydra head, its held-out sampled acceptance, and
the choice made N times in one process two ways, interleaved: "old", as before round 22 (the
drafter timed over one 24-token generation per length, the verify-cost curve as timed), and "new",
mtp.shape.auto_draft_length since round 22 (the median of 3 rounds, a non-decreasing curve).
Prints each call's predicted speedup by K and the K chosen, then a JSON line. Round 22's output:
old K = 3, 3, 1, 3, 2, 2; new K = 2, 3, 3, 3, 2, 3.
    PYTHONPATH=. python docs/results/r22/auto_noise.py [HEADS=runs/demo/hydra/best] [N=6]"""
import json
import sys

import torch

from mtp.costmodel import interpolate, measure_forward_cost
from mtp.heads import load_heads
from mtp.models import load_model
from mtp.shape import auto_draft_length, choose_chain_length, heldout_acceptance, measure_draft_cost

heads_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/demo/hydra/best"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 6
torch.set_num_threads(2)
model, _ = load_model("smollm2-135m", dtype=torch.bfloat16)
heads = load_heads(heads_dir, model)
a = heldout_acceptance(heads_dir, temperature=1.0)
K = len(a)


@torch.no_grad()
def old():
    C = interpolate(measure_forward_cost(model, 128, tuple(range(1, K + 2)), repeats=5))
    d = measure_draft_cost(model, heads.as_drafter(), (1, K), repeats=1)
    D = lambda k: d[1] + (d[K] - d[1]) * (k - 1) / (K - 1)  # noqa: E731
    return choose_chain_length(a, C, D, K)


rows = []
for i in range(N):
    for name, f in (("old", old), ("new", lambda: auto_draft_length(model, heads.as_drafter(), a))):
        k, table = f()
        rows.append({"call": i, "how": name, "K": k, **{f"S{j}": round(v, 3) for j, v in table.items()}})
        print(rows[-1], flush=True)
out = {}
for name in ("old", "new"):
    r = [x for x in rows if x["how"] == name]
    out[name] = {"K": [x["K"] for x in r], **{f"S{j}_range": [min(x[f"S{j}"] for x in r), max(x[f"S{j}"] for x in r)]
                                            for j in range(1, K + 1)}}
print(json.dumps({"heads": heads_dir, "a": a, **out}))
