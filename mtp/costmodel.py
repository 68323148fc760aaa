"""Cost model: predict speculative speedup from measured acceptance and measured costs.

Leviathan et al. (2023): with gamma drafts, expected tokens per target call is
(1 - alpha^(gamma+1)) / (1 - alpha) and the speedup is that over (gamma c + 1), c = draft step
time / target step time. Here both parts are measured instead of assumed:
- tokens per speculative step: 1 + sum_k a_k from the measured per-position acceptance;
- the verify forward costs C(gamma+1), read from the measured curve C(m) of one target forward
  over m new tokens at a fixed prefix length (not the constant C(1));
- the draft step costs what the drafter's propose + observe took per step in the engine.
`predict_stepwise` also charges each step its own draft length (prompt lookup often drafts fewer
than K tokens, or none) and the prefill. `method_row` puts a benchmark method's measured costs,
predicted and measured speedup side by side (eval.costmodel). Chains only: tree drafting needs
C(tree size) and tau = 1 + sum over nodes of P(path accepted); not implemented yet.
"""
from __future__ import annotations

import statistics
import time
import weakref
from bisect import bisect_left
from typing import Callable, Iterable, Sequence

import torch

from mtp.drafters.base import Draft, DraftContext, Drafter, TargetFeedback
from mtp.engine import sync
from mtp.kv import KVState

DEFAULT_TOKENS = tuple(range(1, 17)) + (20, 24, 32, 40, 48, 64)


@torch.no_grad()
def measure_forward_cost(model, prefix_len: int, tokens: Sequence[int] = DEFAULT_TOKENS, repeats: int = 7,
                         warmup: int = 2, seed: int = 0, tree: bool = False, batch_size: int = 1) -> dict[int, float]:
    """{m: median seconds of one target forward over m new tokens per row, for `batch_size` rows,
    after a cached prefix of prefix_len tokens} (logits at every new position, as verification
    computes them). The verify cost of every benchmark. tree: through the tree-verify path
    (`KVState.forward_tree`, a 4-D mask over the pending token and m - 1 nodes; chain-shaped, the
    cost depends on m, not the shape)."""
    device = next(model.parameters()).device
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(seed)
    B = batch_size
    kv = KVState(model, B, device)
    kv.forward(torch.randint(0, V, (B, prefix_len), generator=g).to(device), logits_to_keep=1)
    base = torch.full((B,), prefix_len, device=device)
    times: dict[int, list[float]] = {int(m): [] for m in tokens}
    # Rounds over every m (not all repeats of one m in a row), so a burst of load on a shared
    # machine spreads over the points instead of bending one of them.
    for i in range(warmup + repeats):
        for m in times:
            ids = torch.randint(0, V, (B, m), generator=g).to(device)
            parents = torch.arange(-1, m - 2, device=device)[None].expand(B, -1)  # node i's parent is node i-1
            sync(device)
            t0 = time.perf_counter()
            if tree:
                kv.forward_tree(ids, parents, torch.full((B,), m - 1, device=device))
            else:
                kv.forward(ids)
            sync(device)
            if i >= warmup:
                times[m].append(time.perf_counter() - t0)
            kv.truncate(base)
    return {m: statistics.median(t) for m, t in times.items()}


@torch.no_grad()
def measure_prefill_cost(model, prompt_len: int, repeats: int = 3, seed: int = 0) -> float:
    """Median seconds of a prefill over prompt_len tokens (last-position logits only)."""
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, prompt_len), generator=g).to(device)
    times = []
    for _ in range(repeats + 1):
        kv = KVState(model, 1, device)
        sync(device)
        t0 = time.perf_counter()
        kv.forward(ids, logits_to_keep=1)
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def monotone(costs: dict[int, float]) -> dict[int, float]:
    """The curve made non-decreasing in m (a running maximum): a forward over more tokens never costs
    less, so a dip is timing noise, and left in it can make a longer draft look cheaper than a
    shorter one to the choices made from the curve (`:auto`, `:autotree`, the adaptive union)."""
    out, run = {}, 0.0
    for m in sorted(costs):
        run = out[m] = max(costs[m], run)
    return out


def interpolate(costs: dict[int, float]) -> Callable[[int], float]:
    """C(m) by linear interpolation between measured points (clamped at the ends)."""
    xs = sorted(costs)
    ys = [costs[x] for x in xs]

    def C(m: int) -> float:
        if m <= xs[0]:
            return ys[0]
        if m >= xs[-1]:
            return ys[-1] * m / xs[-1]  # beyond the curve: assume linear in m
        i = bisect_left(xs, m)
        if xs[i] == m:
            return ys[i]
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (m - x0) / (x1 - x0)

    return C


_MACHINE_CURVES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {settings: C}


def machine_verify_cost(model, batch_size: int = 1, prefix_len: int = 256,
                        tokens: Sequence[int] = (1, 2, 4, 8, 12, 16, 24, 32, 48)) -> Callable[[int], float]:
    """C(m) for a drafter that chooses what to verify (mtp.drafters.AdaptiveUnionDrafter): this
    machine's forward cost over m tokens at `batch_size` rows, timed once per model and batch size in
    this process (a few seconds on a CPU) and interpolated."""
    curves = _MACHINE_CURVES.setdefault(model, {})  # keyed by the model object, not its id (ids are reused)
    key = (batch_size, prefix_len, tuple(tokens))
    if key not in curves:
        curves[key] = interpolate(monotone(measure_forward_cost(model, prefix_len, tokens, repeats=5, warmup=1,
                                                                batch_size=batch_size)))
    return curves[key]


class TimedDrafter(Drafter):
    """Wraps a drafter and times its propose and observe calls (its per-step cost in the engine)."""

    def __init__(self, inner: Drafter) -> None:
        self.inner = inner
        self.num_draft_tokens = inner.num_draft_tokens
        self.hidden_layers = inner.hidden_layers
        self.propose_s = 0.0
        self.observe_s = 0.0
        self.proposals = 0

    def reset(self, prompts: list[list[int]]) -> None:
        self.inner.reset(prompts)

    def observe(self, feedback: TargetFeedback) -> None:
        t0 = time.perf_counter()
        self.inner.observe(feedback)
        sync(feedback.num_accepted.device)
        if not feedback.is_prefill:
            self.observe_s += time.perf_counter() - t0

    def propose(self, ctx: DraftContext) -> Draft:
        t0 = time.perf_counter()
        d = self.inner.propose(ctx)
        sync(ctx.device)
        self.propose_s += time.perf_counter() - t0
        self.proposals += 1
        return d

    @property
    def step_s(self) -> float:
        """Seconds per decode step spent in the drafter (propose + observe)."""
        return (self.propose_s + self.observe_s) / self.proposals if self.proposals else float("nan")


def leviathan_tau(alpha: float, gamma: int) -> float:
    """Expected tokens per target call for i.i.d. acceptance alpha and gamma drafts."""
    if alpha >= 1.0:
        return gamma + 1.0
    return (1 - alpha ** (gamma + 1)) / (1 - alpha)


def leviathan_speedup(alpha: float, gamma: int, c: float) -> float:
    """Leviathan et al.'s expected speedup with a constant verify cost (= one decode step)."""
    return leviathan_tau(alpha, gamma) / (gamma * c + 1)


def implied_alpha(tau_step: float, gamma: int) -> float:
    """The i.i.d. per-token acceptance that gives tau_step tokens per step (bisection)."""
    if gamma <= 0:
        return float("nan")
    target = min(max(tau_step, 1.0), gamma + 1.0)
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if leviathan_tau(mid, gamma) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def predict_chain(per_position: Sequence[float], gamma: int, C: Callable[[int], float], draft_step_s: float) -> float:
    """Leviathan's formula with measured parts: (1 + sum_k a_k) C(1) / (t_draft + C(gamma + 1))."""
    tau_step = 1.0 + sum(per_position)
    return tau_step * C(1) / (draft_step_s + C(gamma + 1))


def predict_stepwise(samples: Iterable[dict], C: Callable[[int], float], draft_step_s: float,
                     prefill_s: float = 0.0, verify_cost: Callable[[int], float] | None = None) -> dict:
    """Predicted time of each recorded generation from its own steps, against plain decoding of
    the same tokens: plain = prefill + (n - 1) C(1); method = prefill + sum over decode forwards
    of (draft step + V(drafted + 1)) (forwards without drafts cost C(1), plus the drafter's call).
    V is the verify cost: C for chains, the tree-verify curve for tree drafts (`verify_cost`; a
    tree step's draft length is its node count). Returns the predicted speedup through the
    bench's own metric (per repeat, mean per-prompt tokens/s over plain's; `_speedup_of`) and the
    predicted tokens/s (all tokens over all time)."""
    t_plain = t_method = 0.0
    tokens = 0
    method, plain = [], []
    for s in samples:
        decode = int(s["target_forwards"]) - 1  # the first forward is the prefill
        tm = prefill_s + verify_time(s, C, verify_cost)
        if draft_step_s == draft_step_s and draft_step_s > 0:
            tm += decode * draft_step_s
        tp = prefill_s + max(int(s["new_tokens"]) - 1, 0) * C(1)
        method.append({**s, "wall_time_s": tm})
        plain.append({**s, "wall_time_s": tp})
        t_method, t_plain, tokens = t_method + tm, t_plain + tp, tokens + int(s["new_tokens"])
    return {"predicted_speedup": _speedup_of(method, plain) if t_method > 0 else float("nan"),
            "predicted_tokens_per_s": tokens / t_method if t_method > 0 else float("nan"),
            "predicted_plain_tokens_per_s": tokens / t_plain if t_plain > 0 else float("nan")}


def _speedup_of(method: list[dict], plain: list[dict]) -> float:
    """The bench's speedup metric (mtp.results.speedup) over samples whose wall_time_s holds
    predicted times: what a prediction is compared with is then averaged the same way (a mean of
    per-prompt ratios weighs a prompt lookup copies at 3.9x far more than a ratio of summed times)."""
    from mtp import results

    keyed = lambda xs: [{**s, "repeat": s.get("repeat", 0), "prompt_id": s.get("prompt_id", "")} for s in xs]
    return results.speedup(keyed(method), keyed(plain))[0]


# ------------------------------------------------------------------------------------------------
# Measured costs of a benchmark's methods, and their predicted vs measured speedup
# ------------------------------------------------------------------------------------------------


def nominal_k(method) -> int:
    """The draft length a mtp.bench method asks for (0 for plain decoding)."""
    if getattr(method, "drafter", None) is not None:
        return int(method.k if method.k is not None else method.drafter.num_draft_tokens)
    return int(getattr(method, "pld", None) or 0)


def drafter_step_seconds(model, drafter, batches: list, num_draft_tokens: int | None, *, max_new_tokens: int,
                         temperature: float = 0.0, ignore_eos: bool = False, warmup: bool = False) -> float:
    """Seconds per decode step spent in `drafter` (propose + observe), measured inside the engine
    over one generation per entry of `batches` (a prompt, or a batch of prompts), seeded by index.
    warmup: one untimed generation of batches[0] first."""
    from mtp.engine import generate

    kw = dict(num_draft_tokens=num_draft_tokens, max_new_tokens=max_new_tokens, temperature=temperature,
              ignore_eos=ignore_eos)
    if warmup:
        generate(model, batches[0], drafter=drafter, seed=0, **kw)
    timed = TimedDrafter(drafter)
    for i, b in enumerate(batches):
        generate(model, b, drafter=timed, seed=i, **kw)
    return timed.step_s


def time_drafter(method, model, prompts: list[list[int]], max_new_tokens: int,
                 temperature: float) -> tuple[float, str]:
    """(seconds per decode step spent drafting, note), measured inside the engine. HF prompt lookup
    is timed with the kit's prompt-lookup drafter (same algorithm); plain methods cost 0."""
    from mtp.drafters import PromptLookupDrafter

    drafter, note = getattr(method, "drafter", None), ""
    if drafter is None and getattr(method, "pld", None):
        drafter, note = PromptLookupDrafter(num_draft_tokens=method.pld), "draft cost of the kit's PLD drafter"
    if drafter is None:
        return 0.0, note
    return drafter_step_seconds(model, drafter, prompts, nominal_k(method) or None, max_new_tokens=max_new_tokens,
                                temperature=temperature), note


def verify_time(sample: dict, C: Callable[[int], float], verify_cost: Callable[[int], float] | None = None) -> float:
    """Predicted seconds of one generation's decode forwards: C(1) for a forward without drafts,
    V(d + 1) for one verifying d drafts (V = verify_cost for trees, else C)."""
    V = verify_cost or C
    drafts = list(sample.get("draft_lengths") or [])
    plain_steps = max(int(sample["target_forwards"]) - 1 - len(drafts), 0)
    return plain_steps * C(1) + sum(V(d + 1) if d else C(1) for d in drafts)


def timed(sample: dict) -> bool:
    """Whether a bench sample's forwards were timed by the kit's engine: one `step_costs` entry per
    decode forward (HF methods and results from before the engine timed them have none)."""
    steps = sample.get("step_costs")
    return steps is not None and len(steps) == int(sample["target_forwards"]) - 1


def run_cost_curves(samples: Iterable[dict]) -> dict[str, dict[int, float]]:
    """The verify-cost curves of a bench run, from the forwards it timed itself (`step_costs`, kit
    engine, batch 1): {"chain": {m: median seconds}, "tree": {...}, "count_chain": {m: forwards},
    "count_tree": {...}}, m = tokens in the forward (drafted + 1). Every method's forwards pool
    into one curve, so a method is predicted from the same costs as the others, timed under the
    run's own conditions (interleaved, same process) rather than before or after it."""
    by: dict[tuple[str, int], list[float]] = {}
    for s in filter(timed, samples):
        for drafted, tree, sec in s["step_costs"]:
            by.setdefault(("tree" if tree else "chain", int(drafted) + 1), []).append(float(sec))
    out: dict[str, dict[int, float]] = {"chain": {}, "tree": {}, "count_chain": {}, "count_tree": {}}
    for (kind, m), xs in sorted(by.items()):
        out[kind][m] = statistics.median(xs)
        out["count_" + kind][m] = len(xs)
    return out


def predict_in_run(samples: Iterable[dict], curves: dict[str, dict[int, float]]) -> dict:
    """Predicted speedup over plain decoding from a run's own costs: each generation's steps priced
    at the run's median forward cost for their size and kind (`run_cost_curves`), plus its measured
    prefill and drafting time; plain decoding of the same tokens = the same prefill + (n - 1)
    forwards of one token. The predicted times go through the bench's own speedup metric (per
    repeat, mean per-prompt tokens/s over that of plain; `mtp.results.speedup`), so a gap to the
    measured speedup is what the decode loop's own work and the spread of forward times change,
    not a different average."""
    if 1 not in curves["chain"]:
        return {}
    chain, tree = interpolate(curves["chain"]), interpolate(curves["tree"]) if curves["tree"] else None
    method, plain = [], []
    for s in samples:
        if not timed(s):
            return {}
        steps = s["step_costs"]
        pre = float(s.get("prefill_time_s") or 0.0)
        t = pre + float(s.get("draft_time_s") or 0.0) + sum((tree if k and tree else chain)(int(d) + 1)
                                                            for d, k, _ in steps)
        method.append({**s, "wall_time_s": t})
        plain.append({**s, "wall_time_s": pre + max(int(s["new_tokens"]) - 1, 0) * chain(1)})
    sp = _speedup_of(method, plain)
    return {"predicted_speedup_in_run": sp} if sp == sp else {}


def time_breakdown(samples: list[dict], C: Callable[[int], float], prefill_s: float,
                   verify_cost: Callable[[int], float] | None = None) -> dict:
    """Where one method's measured time went, summed over its bench samples: prefill and verify
    forwards, drafting (`draft_time_s`), and the rest (the decode loop's own work: acceptance
    bookkeeping, Python). Prefill and verify are the times the run measured (`prefill_time_s`,
    `step_costs`) when its samples have them, else priced from the cost curves and each step's
    draft length. Shares of the measured wall time."""
    wall = sum(float(s["wall_time_s"]) for s in samples)
    was_timed = bool(samples) and all(map(timed, samples))
    if was_timed:
        prefill = sum(float(s.get("prefill_time_s") or 0.0) for s in samples)
        verify = sum(c[2] for s in samples for c in s["step_costs"])
    else:
        prefill = prefill_s * len(samples)
        verify = sum(verify_time(s, C, verify_cost) for s in samples)
    draft = sum(float(s.get("draft_time_s") or 0.0) for s in samples)
    other = wall - prefill - verify - draft
    share = (lambda x: x / wall) if wall > 0 else (lambda x: float("nan"))
    return {"prefill_share": share(prefill), "verify_share": share(verify), "draft_share": share(draft),
            "other_share": share(other), "breakdown": "timed in the run" if was_timed else "priced from the cost curves"}


def method_row(name: str, K: int, samples: list[dict], C: Callable[[int], float], step_s: float, prefill_s: float,
               reference: str | None, verify_cost: Callable[[int], float] | None = None,
               run_curves: dict[str, dict[int, float]] | None = None) -> dict:
    """One method's costs, and with its bench samples (the whole folder's `samples`): measured tau
    and a_k, predicted speedup (stepwise and Leviathan's chain formula) next to the measured one
    against `reference`, gap = predicted / measured - 1, and the time breakdown. `verify_cost`:
    the tree-verify curve for a method that drafts trees (K is then its depth). `run_curves`: the
    run's own cost curves (`run_cost_curves`), for predicted_speedup_in_run and gap_in_run."""
    from mtp import results

    V = verify_cost or C
    row = {"method": name, "K": K, "draft_step_ms": 1e3 * step_s, "verify_ms": 1e3 * V(K + 1), "decode_ms": 1e3 * C(1)}
    ms = [s for s in samples if s["method"] == name]
    if not ms:
        return row
    st = results.spec_stats(ms)
    pp = st.per_position_acceptance()
    tau_step = 1.0 + sum(pp)
    row.update(tau=st.tau, tau_step=tau_step, alpha_iid=implied_alpha(tau_step, K) if K else float("nan"),
               predicted_speedup_chain=predict_chain(pp, K, C, step_s) if K else 1.0,
               **predict_stepwise(ms, C, step_s, prefill_s, verify_cost))
    if any("draft_time_s" in s for s in ms):
        row["draft_step_ms_in_bench"] = 1e3 * sum(float(s.get("draft_time_s") or 0) for s in ms) / max(
            1, sum(int(s["target_forwards"]) - 1 for s in ms))
    row.update(time_breakdown(ms, C, prefill_s, verify_cost))
    row["predicted_speedup"] = row["predicted_speedup"] if K else 1.0
    row["measured_tokens_per_s"] = results.tokens_per_s(ms)[0]
    row["measured_against"] = reference
    if reference:
        row["measured_speedup"], row["measured_speedup_spread"] = results.speedup(
            ms, [s for s in samples if s["method"] == reference])
    ps, mm = row.get("predicted_speedup"), row.get("measured_speedup")
    row["gap"] = ps / mm - 1 if ps and mm and mm == mm else float("nan")
    if run_curves is not None and K:
        row.update(predict_in_run(ms, run_curves))
    pr = row.get("predicted_speedup_in_run")
    row["gap_in_run"] = pr / mm - 1 if pr and mm and mm == mm else float("nan")
    return row
