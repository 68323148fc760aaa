"""A/B of DeepSeek MTP drafting, round 14: before (23bf8c3: a catch-up forward per module and step,
one LM-head call per tree path) and after (committed positions fed in the forward that drafts,
one LM-head call per module), same weights, same process, arms interleaved per prompt, after a
warm-up repeat; greedy outputs of the two arms must be equal (asserted).

    python docs/results/fam14/ab_deepseek.py [num_prompts=6] [max_new_tokens=128] [repeats=3]

from the repository root, with runs/full-hydra/deepseek/best trained (README, round 12)."""
import copy, importlib.util, json, statistics, subprocess, sys, tempfile, time
from pathlib import Path

old_src = subprocess.run(["git", "show", "23bf8c3:mtp/heads/deepseek_mtp.py"], capture_output=True, text=True, check=True).stdout
old_path = Path(tempfile.mkdtemp()) / "deepseek_mtp_old.py"
old_path.write_text(old_src)
spec = importlib.util.spec_from_file_location("deepseek_mtp_old", old_path)
old_mod = importlib.util.module_from_spec(spec)
sys.modules["deepseek_mtp_old"] = old_mod  # its dataclasses look their module up there
spec.loader.exec_module(old_mod)
Old = old_mod.DeepSeekMTPHead
from mtp.engine import generate
from mtp.heads import load_heads
from mtp.methods import tree_width
from mtp.models import load_model
from mtp.suites import load_suite, balanced
from mtp.chat import encode_turn
from mtp.tree import DynamicTreeConfig

model, tok = load_model("smollm2-135m", dtype="bf16")
new = load_heads("runs/full-hydra/deepseek/best", model).eval()
old = copy.copy(new); old.__class__ = Old
N, T, R = (int(x) for x in (sys.argv[1:] or ["6", "128", "3"]))
prompts = [encode_turn(tok, p, 0) for p in balanced(load_suite("spec"), N)]
shapes = {"chain2": dict(k=2, tree=None), "tree16": dict(k=None, tree=DynamicTreeConfig(16, 3, tree_width(16, 3)))}
res = {}
for rep in range(R):
    for shape, cfg in shapes.items():
        for pi, ids in enumerate(prompts):
            arms = [("old", old), ("new", new)] if (rep + pi) % 2 == 0 else [("new", new), ("old", old)]
            outs = {}
            for arm, head in arms:
                d = head.as_drafter(cfg["k"], tree=cfg["tree"])
                t0 = time.perf_counter()
                o = generate(model, ids, drafter=d, num_draft_tokens=cfg["k"], max_new_tokens=T)
                wall = time.perf_counter() - t0
                s = o.stats
                outs[arm] = o.tokens
                if rep > 0:  # rep 0: warm-up
                    res.setdefault((shape, arm), []).append(dict(wall=wall, draft=s.draft_time_s, steps=len(s.accept_lengths),
                                                                 tokens=s.new_tokens))
            assert outs["old"] == outs["new"], (shape, pi)
rows = []
for (shape, arm), rs in sorted(res.items()):
    ms = [1000 * r["draft"] / r["steps"] for r in rs]
    tps = [r["tokens"] / r["wall"] for r in rs]
    rows.append(dict(shape=shape, arm=arm, draft_ms_per_step=statistics.median(ms), tok_s=statistics.median(tps),
                     tok_s_mean=sum(r["tokens"] for r in rs) / sum(r["wall"] for r in rs)))
    print(f"{shape:7s} {arm:4s} drafting {rows[-1]['draft_ms_per_step']:.1f} ms/step (median of {len(ms)}), "
          f"{rows[-1]['tok_s_mean']:.2f} tok/s overall")
for shape in shapes:
    o, n = [r for r in rows if r["shape"] == shape and r["arm"] == "old"][0], [r for r in rows if r["shape"] == shape and r["arm"] == "new"][0]
    print(f"{shape}: drafting {o['draft_ms_per_step']:.1f} -> {n['draft_ms_per_step']:.1f} ms/step, tok/s x{n['tok_s_mean'] / o['tok_s_mean']:.3f}")
print(json.dumps(rows))
