"""The batch sweep: plain and speculative decoding over batch sizes, throughput (total tokens/s)
against interactivity (tokens/s per sequence), the shape of NVIDIA's DeepSeek-R1 MTP charts.
Used by eval.sweep; its points go to a results folder's sweep.json (mtp.results)."""
from __future__ import annotations

import statistics
import sys
import time

from mtp import results
from mtp.engine import generate, sync


def batch_sweep(model, variants: list[tuple[str, object, int | None]], prompts: list[list[int]],
                batch_sizes: list[int], *, repeats: int = 3, max_new_tokens: int = 64, temperature: float = 0.0,
                seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Time `mtp.engine.generate` over batches of B prompts (EOS ignored: every row makes
    max_new_tokens tokens) for each (label, drafter or None, K) variant and batch size (drafter
    and K may be {batch size: ...} dicts: a drafter and draft length chosen per batch size), after a
    warm-up at every batch size; points interleaved per repeat, medians over repeats. Returns
    (points, skipped): a point holds label, method, K, batch_size, tokens_per_s_per_seq
    (interactivity), tokens_per_s_total (throughput), its spread, tau, wall_s and pareto;
    skipped lists the (label, batch_size) a drafter cannot batch, with the reason."""
    device = next(model.parameters()).device
    rows = [prompts[i % len(prompts)] for i in range(max(batch_sizes))]

    def one(drafter, k, B, new, s):
        if isinstance(drafter, dict):  # a drafter per batch size (":auto" methods), its own length
            drafter, k = drafter[B], None
        sync(device)
        t0 = time.perf_counter()
        o = generate(model, rows[:B], drafter=drafter, num_draft_tokens=k, max_new_tokens=new,
                     temperature=temperature, seed=s, ignore_eos=True)
        sync(device)
        return time.perf_counter() - t0, o

    runs: dict[tuple[str, int], list] = {}
    skipped: dict[tuple[str, int], str] = {}
    for B in batch_sizes:  # warm-up at every batch size (CUDA kernels differ by shape)
        for label, d, k in variants:
            try:
                one(d, k, B, min(8, max_new_tokens), seed)
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
    per_seq = [statistics.fmean(len(t) for t in o.tokens) / dt for dt, o in rs]
    total = [sum(len(t) for t in o.tokens) / dt for dt, o in rs]
    tail = label.rpartition(":")[2]
    has_k = ":" in label and tail.isdigit()
    K = k.get(B, 0) if isinstance(k, dict) else int(tail) if has_k else 0
    return {"label": label, "method": label.rpartition(":")[0] if has_k else label, "K": K,
            "batch_size": B, "tokens_per_s_per_seq": statistics.median(per_seq),
            "tokens_per_s_total": statistics.median(total), "tokens_per_s_total_spread": max(total) - min(total),
            "tau": statistics.median(o.stats.tau for _, o in rs), "wall_s": statistics.median(dt for dt, _ in rs)}
