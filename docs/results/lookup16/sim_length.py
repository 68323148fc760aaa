"""Lookup's chain length, simulated offline on distilled data (never the evaluation suite): a fixed
length against each agreement bucket's own, set by mtp.drafters.adaptive.LookupSurvival (the
AdaptiveUnionDrafter's adaptive_length) from the acceptance of the chains it verified so far.

Lookup alone, the round-15 rule (mtp.drafters.ngram.lookup_match, 1-3-grams, prefer="agreement"),
greedy responses decoded as in docs/results/lookup15/sim_lookup.py; speed is the cost model's, with
this machine's verify-cost curve (timed at the start, so it moves by about 1% from run to run).

    python docs/results/lookup16/sim_length.py runs/full-hydra/data/distill runs/full-hydra/data/distill-passages
"""
import collections
import glob
import json
import sys
from bisect import bisect_right

from mtp.costmodel import machine_verify_cost
from mtp.drafters.adaptive import AGREEMENT_BUCKETS, LookupSurvival
from mtp.drafters.ngram import lookup_match
from mtp.models import load_model

KMAX = 32


def simulate(rows, costs, fixed: int | None):
    out = collections.defaultdict(collections.Counter)
    surv = [LookupSurvival(KMAX) for _ in range(len(AGREEMENT_BUCKETS) + 1)]
    for r in rows:
        grp = "passage" if r["category"].startswith("passage") else "other"
        p, resp = r["prompt_ids"], r["response_ids"]
        i = 0
        while i < len(resp):
            chain, agree = lookup_match(p + resp[:i], 3, KMAX, 1, prefer="agreement")
            s = surv[bisect_right(AGREEMENT_BUCKETS, agree)]
            chain = chain[: fixed or s.best_length(costs)]
            m = 0
            while m < len(chain) and i + m < len(resp) and chain[m] == resp[i + m]:
                m += 1
            if chain:
                s.observe(len(chain), m, censored=m == len(chain) or i + m >= len(resp))
            c = out[grp]
            c["steps"] += 1
            c["tokens"] += m + 1
            c["time"] += costs[len(chain)]
            c["plain"] += costs[0] * (m + 1)
            i += m + 1
    return out


def main(folders):
    model, _ = load_model("smollm2-135m", dtype="bf16")
    C = machine_verify_cost(model, 1)
    costs = [C(1 + k) for k in range(KMAX + 1)]
    rows = [json.loads(line) for folder in folders for f in sorted(glob.glob(f"{folder}/*.jsonl")) for line in open(f)]
    print(f"{len(rows)} responses; C(1)={costs[0] * 1e3:.1f} ms, C(11)={costs[10] * 1e3:.1f} ms, "
          f"C(33)={costs[32] * 1e3:.1f} ms")
    res = []
    for fixed in (10, 16, None):
        for grp, c in sorted(simulate(rows, costs, fixed).items()):
            d = dict(length=fixed or f"adaptive (up to {KMAX})", group=grp, tau=c["tokens"] / c["steps"],
                     speedup=c["plain"] / c["time"])
            res.append(d)
            print(f"{str(d['length']):20s} {grp:8s} tau {d['tau']:.2f}  speed (cost model) {d['speedup']:.3f}x", flush=True)
    print(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1:])
