"""A/B of the adaptive union's lookup chain length, round 16, through the kit's one runner
(mtp.bench.SuiteRun: methods interleaved per prompt, order rotated per repeat, after a warm-up).

  adapt-10:  every lookup chain 10 drafts (round 15's, still the default);
  adapt:     each agreement bucket's length from its verified chains' per-position acceptance and
             this machine's verify-cost curve, up to 32 (AdaptiveUnionDrafter(adaptive_length=True)).
Both with the same head, the same tree (16 nodes, depth 3) and the same lookup rule; plain decoding
(`vanilla`) and prompt lookup (`pld`) beside them.

    python docs/results/lookup16/ab_length.py <heads dir> <suite> <out> [num_prompts] [repeats]

e.g. runs/demo/hydra/best foundation results/lookup16/foundation 20 1 (off the suite), and
... spec results/lookup16/spec 6 2 (the demo's prompts)."""
import sys
from pathlib import Path

from mtp.bench import SuiteRun, make_method
from mtp.costmodel import machine_verify_cost
from mtp.drafters.adaptive import AdaptiveUnionDrafter
from mtp.io import atomic_write_json
from mtp.methods import KitMethod
from mtp.models import load_model
from mtp.runinfo import collect_meta
from mtp.suites import load_suite

heads, suite, out = sys.argv[1:4]
n = int(sys.argv[4]) if len(sys.argv) > 4 else None
repeats = int(sys.argv[5]) if len(sys.argv) > 5 else 1
model, tok = load_model("smollm2-135m", dtype="bf16")
methods = [make_method(s, model, tok) for s in ("vanilla", "pld")]
old = make_method(f"adapt+heads:{heads}:3:tree16", model, tok)
old.name = "adapt-10"
assert not old.drafter.adaptive_length and old.drafter.lookup_tokens == 10
head = make_method(f"heads:{heads}:3:tree16", model, tok).drafter
new = KitMethod("adapt", model, tok, AdaptiveUnionDrafter(head, machine_verify_cost(model, 1), lookup_tokens=32,
                                                          adaptive_length=True))
new.key = old.key + "#auto32"
methods += [old, new]
config = dict(model="smollm2-135m", suite=suite, num_prompts=n, temperature=0.0, max_new_tokens=128, repeats=repeats,
              warmup=1, dtype="bf16", methods={m.name: m.key for m in methods})
Path(out).mkdir(parents=True, exist_ok=True)
atomic_write_json(Path(out) / "meta.json", collect_meta(config, model))
run = SuiteRun(out, methods, load_suite(suite, n), tok, repeats=repeats, warmup=1, max_new_tokens=128)
run.run()
summary = run.finalize(model)
