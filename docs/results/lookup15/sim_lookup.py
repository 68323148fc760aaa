"""Prompt lookup's match rules, simulated offline on distilled data (never the evaluation suite).

For each distilled (prompt, greedy response) pair, decode the response as prompt lookup would at
T=0: at each step the context is the prompt plus the committed response, a rule proposes a chain
(up to K tokens), the target accepts the prefix that equals the response, and one more token is
committed. Reported per rule: tau (tokens per step), the share of steps with a chain, and the rate
(1 + accepted) / C(1 + chain) against plain decoding's 1 / C(1), with this machine's verify-cost
curve C (mtp.costmodel.machine_verify_cost, smollm2-135m, bf16).

    python docs/results/lookup15/sim_lookup.py runs/full-hydra/data/distill runs/full-hydra/data/distill-passages
"""
import glob, json, sys, collections

from mtp.drafters.ngram import _ngram_hits, agreement, lookup_match

K = 10


def rule(min_n, max_n, pick):
    """Of the largest n-gram's occurrences: "first" (prompt lookup's), "last", or "agree" (the longest
    agreement, the earliest of ties; lookup_match(prefer="agreement") takes the latest)."""
    def f(seq):
        best = None
        for n, idx in _ngram_hits(seq, max_n, min_n):
            if best is not None and n != best[0]:
                break
            if pick == "first":
                return seq[idx + n: idx + n + K]
            key = (idx,) if pick == "last" else (agreement(seq, n, idx), -idx)
            if best is None or key > best[2]:
                best = (n, idx, key)
        if best is None:
            return []
        n, idx, _ = best
        return seq[idx + n: idx + n + K]
    return f


RULES = {
    "pld (1-2, first)": rule(1, 2, "first"),
    "adapt r14 (2-3, first)": lambda seq: lookup_match(seq, 3, K, 2)[0],
    "1-3, first": rule(1, 3, "first"),
    "1-3, longest agreement": rule(1, 3, "agree"),
    "1-3, last": rule(1, 3, "last"),
    "1-3, longest agr., latest (r15)": lambda seq: lookup_match(seq, 3, K, 1, prefer="agreement")[0],
    "1-4, longest agreement": rule(1, 4, "agree"),
    "2-4, longest agreement": rule(2, 4, "agree"),
}


def main(folders):
    from mtp.costmodel import machine_verify_cost
    from mtp.models import load_model
    model, _ = load_model("smollm2-135m", dtype="bf16")
    C = machine_verify_cost(model, 1)
    rows = []
    for folder in folders:
        for f in sorted(glob.glob(f"{folder}/*.jsonl")):
            rows += [json.loads(l) for l in open(f)]
    out = collections.defaultdict(lambda: collections.Counter())
    for r in rows:
        grp = "passage" if r["category"].startswith("passage") else "other"
        p, resp = r["prompt_ids"], r["response_ids"]
        for name, fn in RULES.items():
            c = out[(name, grp)]
            i = 0
            while i < len(resp):
                chain = fn(p + resp[:i])
                m = 0
                while m < len(chain) and i + m < len(resp) and chain[m] == resp[i + m]:
                    m += 1
                m = min(m, len(resp) - i - 1) if i + m >= len(resp) else m
                c["steps"] += 1
                c["tokens"] += m + 1
                c["matched"] += bool(chain)
                c["time"] += C(1 + len(chain))
                c["plain"] += C(1) * (m + 1)
                i += m + 1
    print(f"{len(rows)} responses; C(1)={C(1)*1e3:.1f} ms, C(11)={C(11)*1e3:.1f} ms, C(27)={C(27)*1e3:.1f} ms")
    print(f"{'rule':32s} {'group':8s} {'tau':>5s} {'match%':>7s} {'speed (cost model)':>19s}")
    res = []
    for (name, grp), c in out.items():
        d = dict(rule=name, group=grp, tau=c["tokens"] / c["steps"], match=c["matched"] / c["steps"],
                 speedup=c["plain"] / c["time"])
        res.append(d)
    for grp in ("other", "passage"):
        for d in res:
            if d["group"] == grp:
                print(f"{d['rule']:32s} {grp:8s} {d['tau']:5.2f} {100 * d['match']:6.0f}% {d['speedup']:18.2f}x")
    print(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1:])
