"""eval.bench with adaptive-union variants whose head estimate is averaged more slowly: a method
named "<name>-hs<w>" (an adapt+heads:... spec) runs with head_smoothing=w
(mtp.drafters.adaptive.AdaptiveUnionDrafter), its key marked so its cells are its own. Every other
argument is eval.bench's. Round 22's A/B of the union's chooser at T=1 (docs/results/r22/run_bench.sh)."""
import re
import sys

import eval.bench as bench

_build = bench.build_methods


def build(specs, model, tok, temperature=0.0):
    methods = _build(specs, model, tok, temperature)
    for m in methods:
        hit = re.search(r"-hs([0-9.]+)$", m.name)
        if hit:
            m.drafter.head_smoothing = float(hit.group(1))
            m.key += f"#hs{hit.group(1)}"
    return methods


bench.build_methods = build
if __name__ == "__main__":
    sys.exit(bench.main())
