"""Per-step log of the adaptive union (a head's 16-node tree, depth 3) on prompts off the spec suite
(`foundation`'s 20 chat prompts and 12 HumanEval prompts): the chosen proposal, lookup's chain and
bucket, the head's tree with each node's cumulative log-prob (EAGLE-2's score), and the committed
tokens. Input of analyse.py.

    python docs/results/gate16/collect.py runs/full-hydra/hydra/final results/gate16/steps.json
"""
import json
import sys
from pathlib import Path

import mtp.tree
from mtp.chat import encode_turn
from mtp.drafters.adaptive import AdaptiveUnionDrafter
from mtp.engine import generate
from mtp.io import atomic_write_json
from mtp.methods import make_method
from mtp.models import load_model
from mtp.suites import load_suite

SCORES: list[list[float]] = []
_build = mtp.tree.build_dynamic_tree


def build(*args, **kw):  # the head's tree builder, keeping each tree's node scores
    SCORES.append([])
    return _build(*args, **kw, scores_out=SCORES[-1])


mtp.tree.build_dynamic_tree = build  # HeadDrafter imports it at call time
STEPS: list[dict] = []
_observe = AdaptiveUnionDrafter.observe


def observe(self, fb):
    if not fb.is_prefill:
        row = self._rows[0]
        STEPS.append(dict(mode=row.mode, chain=list(row.chain), bucket=row.bucket,
                          tree=None if row.tree is None else list(row.tree),
                          scores=SCORES[-1] if row.tree is not None else None,
                          got=list(fb.new_tokens[0]) if fb.new_tokens else [], acc=int(fb.num_accepted[0])))
    return _observe(self, fb)


AdaptiveUnionDrafter.observe = observe


def main(heads: str, out: str) -> None:
    model, tok = load_model("smollm2-135m", dtype="bf16")
    method = make_method(f"adapt+heads:{heads}:3:tree16", model, tok)
    res = []
    for it in load_suite("foundation") + load_suite("humaneval", 12):
        STEPS.clear()
        generate(model, encode_turn(tok, it, 0), drafter=method.drafter, max_new_tokens=128)
        res.append(dict(id=it.id, category=it.category, steps=list(STEPS)))
        print(it.id, len(STEPS), flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, res)


if __name__ == "__main__":
    main(*sys.argv[1:3])
