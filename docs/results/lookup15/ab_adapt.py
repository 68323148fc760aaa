"""A/B of the adaptive union's lookup rule, round 15, through the kit's one runner (mtp.bench.SuiteRun:
methods interleaved per prompt, order rotated per repeat, after a warm-up).

  adapt-r14: lookup's chain from the latest 2- or 3-gram, at its earliest occurrence (round 14);
  adapt:     1- to 3-gram, at the occurrence agreeing furthest back; a lone token's match is a
             bucket of its own (round 15's default).
Both with the same head, the same tree (16 nodes, depth 3) and this machine's verify-cost curve;
plain decoding (`vanilla`) and prompt lookup (`pld`) beside them.

    python docs/results/lookup15/ab_adapt.py <heads dir> <suite> <out> [num_prompts] [repeats]

e.g. runs/demo/hydra/best spec results/lookup15/spec 6 2 (the demo's prompts), and the off-suite
check: ... foundation results/lookup15/foundation 20 1."""
import sys
from pathlib import Path

from mtp.bench import SuiteRun, make_method
from mtp.costmodel import machine_verify_cost
from mtp.drafters.adaptive import AdaptiveUnionDrafter
from mtp.methods import KitMethod
from mtp.io import atomic_write_json
from mtp.models import load_model
from mtp.runinfo import collect_meta
from mtp.suites import load_suite

heads, suite, out = sys.argv[1:4]
n = int(sys.argv[4]) if len(sys.argv) > 4 else None
repeats = int(sys.argv[5]) if len(sys.argv) > 5 else 1
model, tok = load_model("smollm2-135m", dtype="bf16")
methods = [make_method(s, model, tok) for s in ("vanilla", "pld")]
spec = f"adapt+heads:{heads}:3:tree16"
new = make_method(spec, model, tok)
new.name = "adapt"
old_head = make_method(f"heads:{heads}:3:tree16", model, tok).drafter
old = KitMethod("adapt-r14", model, tok, AdaptiveUnionDrafter(old_head, machine_verify_cost(model, 1), min_ngram=2,
                                                              prefer="first"))
old.key = new.key + "#r14"
assert new.drafter.min_ngram == 1 and new.drafter.prefer == "agreement"
methods += [old, new]
config = dict(model="smollm2-135m", suite=suite, num_prompts=n, temperature=0.0, max_new_tokens=128, repeats=repeats,
              warmup=1, dtype="bf16", methods={m.name: m.key for m in methods})
Path(out).mkdir(parents=True, exist_ok=True)
atomic_write_json(Path(out) / "meta.json", collect_meta(config, model))
run = SuiteRun(out, methods, load_suite(suite, n), tok, repeats=repeats, warmup=1, max_new_tokens=128)
run.run()
summary = run.finalize(model)
