"""The batch sweep: plain and speculative decoding over batch sizes, throughput (total tokens/s)
against interactivity (tokens/s per sequence), the shape of NVIDIA's DeepSeek-R1 MTP charts.
Used by eval.sweep; its points go to a results folder's sweep.json (mtp.results)."""
from __future__ import annotations

import math
import statistics
import sys
import time

from mtp import results
from mtp.engine import generate, sync
from mtp.stats import SpecStats


def sweep_size(batch_sizes: list[int], num_prompts: int | None = None) -> int:
    """The number of prompts a sweep decodes at every batch size: num_prompts, checked to split
    evenly into batches of each size, or (None or 0) the least common multiple of the sizes."""
    n = int(num_prompts or 0) or math.lcm(*batch_sizes)
    if n < 1:
        raise ValueError(f"{n} prompts: give a number >= 1, or 0 for the least common multiple of the batch "
                         f"sizes ({math.lcm(*batch_sizes)})")
    bad = [B for B in batch_sizes if n % B]
    if bad:
        raise ValueError(f"{n} prompts do not split evenly into batches of {bad}: give a number of "
                         f"prompts that every batch size divides (e.g. {math.lcm(*batch_sizes)})")
    return n


def batch_sweep(model, variants: list[tuple[str, object, int | None]], prompts: list[list[int]],
                batch_sizes: list[int], *, repeats: int = 3, max_new_tokens: int = 64, temperature: float = 0.0,
                seed: int = 0, num_prompts: int | None = None) -> tuple[list[dict], list[dict]]:
    """Time `mtp.engine.generate` over the same `num_prompts` prompts at every batch size B, split
    into num_prompts / B batches run one after another (EOS ignored: every row makes max_new_tokens
    tokens), for each (label, drafter or None, K) variant (drafter and K may be {batch size: ...}
    dicts: a drafter and draft length chosen per batch size). num_prompts defaults to the least
    common multiple of the batch sizes (16 for 1,2,4,8,16); `prompts` are cycled when fewer. So
    batch 1 is measured on as many prompts as batch 16, not on one. After a warm-up at every batch
    size, points are interleaved per repeat, medians over repeats. Returns (points, skipped): a
    point holds label, method, K, batch_size, num_prompts, tokens_per_s_per_seq (interactivity:
    tokens per row over the mean batch time), tokens_per_s_total (throughput: all tokens over all
    batches' time), its spread, tau (over all batches), wall_s (all batches) and pareto; skipped lists
    the (label, batch_size) a drafter cannot batch, with the reason."""
    device = next(model.parameters()).device
    n = sweep_size(batch_sizes, num_prompts)
    rows = [prompts[i % len(prompts)] for i in range(n)]

    def one(drafter, k, B, new, s, batches=None):
        if isinstance(drafter, dict):  # a drafter per batch size (":auto" methods), its own length
            drafter, k = drafter[B], None
        timed = []
        for i in range(0, n if batches is None else batches * B, B):
            sync(device)
            t0 = time.perf_counter()
            o = generate(model, rows[i:i + B], drafter=drafter, num_draft_tokens=k, max_new_tokens=new,
                         temperature=temperature, seed=s, ignore_eos=True)
            sync(device)
            timed.append((time.perf_counter() - t0, o))
        return timed

    runs: dict[tuple[str, int], list] = {}
    skipped: dict[tuple[str, int], str] = {}
    for B in batch_sizes:  # warm-up at every batch size (CUDA kernels differ by shape): one short batch
        for label, d, k in variants:
            try:
                one(d, k, B, min(8, max_new_tokens), seed, batches=1)
            except NotImplementedError as e:
                skipped[(label, B)] = str(e)
    for r in range(repeats):
        for B in batch_sizes:
            for label, d, k in variants:
                if (label, B) not in skipped:
                    runs.setdefault((label, B), []).append(one(d, k, B, max_new_tokens, seed + r))
        print(f"[sweep] repeat {r + 1}/{repeats} done", file=sys.stderr, flush=True)
    ks = {label: k for label, _, k in variants}
    points = [_sweep_point(label, B, rs, ks[label]) for (label, B), rs in runs.items()]
    for i in results.pareto_front([(p["tokens_per_s_per_seq"], p["tokens_per_s_total"]) for p in points]):
        points[i]["pareto"] = True
    return points, [{"label": s, "batch_size": b, "reason": e} for (s, b), e in skipped.items()]


def _sweep_point(label: str, B: int, rs: list, k=None) -> dict:
    """One (label, batch size) point from its repeats; a repeat is [(seconds, output)] over its batches."""
    walls = [sum(dt for dt, _ in rep) for rep in rs]
    tokens = [sum(len(t) for _, o in rep for t in o.tokens) for rep in rs]
    rows = sum(len(o.tokens) for _, o in rs[0])
    total = [t / w for t, w in zip(tokens, walls)]
    per_seq = [x / B for x in total]  # tokens per row over the mean batch time
    tail = label.rpartition(":")[2]
    has_k = ":" in label and tail.isdigit()
    K = k.get(B, 0) if isinstance(k, dict) else int(tail) if has_k else 0
    return {"label": label, "method": label.rpartition(":")[0] if has_k else label, "K": K,
            "batch_size": B, "num_prompts": rows, "tokens_per_s_per_seq": statistics.median(per_seq),
            "tokens_per_s_total": statistics.median(total), "tokens_per_s_total_spread": max(total) - min(total),
            "tau": statistics.median(SpecStats.sum([o.stats for _, o in rep]).tau for rep in rs),
            "wall_s": statistics.median(walls)}
