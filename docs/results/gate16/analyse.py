"""Would gating the head's tree by its own confidence pay? From collect.py's steps: how the head's
top-1 probability (the best depth-1 node's) and its expected accepted depth under its own
probabilities (sum of the nodes' path probabilities, EAGLE-2's score) track the depth the target
accepted; and the cost model's tokens per second if the tree were dropped whenever the top-1
probability is below a threshold (a union step then verifies lookup's chain alone, a head step
is a plain step), against what ran. The thresholds are scanned on the same steps, so the best one
is an upper bound. Costs: this machine's verify-cost curve; drafting 0.06 of a plain step where the
head drafted (results/fam15's measured draft cost for Hydra).

    python docs/results/gate16/analyse.py results/gate16/steps.json
"""
import json
import math
import sys

from mtp.costmodel import machine_verify_cost
from mtp.drafters.adaptive import _chain_match, _tree_match
from mtp.models import load_model


def main(path: str) -> None:
    model, _ = load_model("smollm2-135m", dtype="bf16")
    C = machine_verify_cost(model, 1)
    D = 0.06 * C(1)
    steps = [s for r in json.load(open(path)) for s in r["steps"]]
    rows = []
    tokens0 = time0 = 0.0
    for s in steps:
        L = len(s["chain"])
        if s["tree"] is None:  # lookup alone or a plain step: unchanged by the gate
            tokens0 += 1 + s["acc"]
            time0 += C(1 + L)
            continue
        toks, pars = s["tree"]
        top1 = max(math.exp(x) for x, p in zip(s["scores"], pars) if p == -1)
        rows.append(dict(top1=top1, E=sum(math.exp(x) for x in s["scores"]), d=_tree_match(toks, pars, s["got"]),
                         tree=(1 + s["acc"], C(1 + L + len(toks)) + D),
                         gated=(1 + (_chain_match(tuple(s["chain"]), s["got"]) if L else 0), C(1 + L))))
    print(f"{len(steps)} steps, {len(rows)} with the head's tree")
    print("head's top-1 prob | steps | accepted depth in its tree | expected under its own probabilities")
    edges = [0, .1, .2, .3, .4, .5, .6, .7, .8, .9, 1.01]
    for lo, hi in zip(edges, edges[1:]):
        b = [r for r in rows if lo <= r["top1"] < hi]
        if b:
            print(f"{lo:.1f}-{min(hi, 1):.1f} | {len(b)} | {sum(r['d'] for r in b) / len(b):.2f} | "
                  f"{sum(r['E'] for r in b) / len(b):.2f}")
    base = (tokens0 + sum(r["tree"][0] for r in rows)) / (time0 + sum(r["tree"][1] for r in rows))
    res = []
    print("gate: drop the tree below top-1 prob | steps dropped | tokens/s against what ran (cost model)")
    for thr in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7):
        tok = tokens0 + sum((r["tree"] if r["top1"] >= thr else r["gated"])[0] for r in rows)
        t = time0 + sum((r["tree"] if r["top1"] >= thr else r["gated"])[1] for r in rows)
        res.append(dict(threshold=thr, dropped=sum(r["top1"] < thr for r in rows), rate=tok / t / base))
        print(f"{thr:.1f} | {res[-1]['dropped']} | x{res[-1]['rate']:.3f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1])
