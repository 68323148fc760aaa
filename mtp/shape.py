"""Draft length from measurement: the chain length the cost model predicts to be fastest, per batch size.

A chain of K drafts pays when the tokens it adds outweigh what it costs: with per-position
acceptance a_k (P(at least k drafts accepted)), a verify forward over m tokens costing C(m) and a
draft step of K tokens costing D(K), the predicted speedup over plain decoding is

    S(K) = (1 + a_1 + ... + a_K) * C(1) / (C(K + 1) + D(K)),        S(0) = 1 (no drafting).

C grows with the batch size (a batch of B rows verifies B(K+1) tokens per forward), so the best K
shrinks as the batch grows; `auto_draft_length` measures C and D on this machine at the batch size
asked for and picks K. The acceptance comes from held-out data (`heldout_acceptance` reads what the
trainer measured on its held-out split at the chosen checkpoint), never from the evaluation suite.

    a = heldout_acceptance("runs/full/eagle3/best")            # [a_1, ..., a_K]
    K, table = auto_draft_length(model, heads.as_drafter(), a, batch_size=4)
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Callable, Sequence

import torch


def predicted_speedup(per_position: Sequence[float], k: int, verify_cost: Callable[[int], float],
                      draft_cost: Callable[[int], float]) -> float:
    """S(K) above; S(0) = 1."""
    if k == 0:
        return 1.0
    return (1.0 + sum(per_position[:k])) * verify_cost(1) / (verify_cost(k + 1) + draft_cost(k))


def choose_chain_length(per_position: Sequence[float], verify_cost: Callable[[int], float],
                        draft_cost: Callable[[int], float], max_k: int | None = None) -> tuple[int, dict[int, float]]:
    """(K with the largest predicted speedup, {K: predicted speedup} for K = 0..max_k). K = 0 means
    drafting is predicted not to pay at all."""
    max_k = len(per_position) if max_k is None else min(max_k, len(per_position))
    table = {k: predicted_speedup(per_position, k, verify_cost, draft_cost) for k in range(max_k + 1)}
    return max(table, key=lambda k: (table[k], -k)), table


def _heldout_row(heads_dir: str | Path) -> dict | None:
    """The trainer's last held-out evaluation at the step this checkpoint was saved (from the run
    folder's metrics.jsonl and best.json / final.json), or None."""
    d = Path(heads_dir)
    run = d.parent
    marker = run / f"{d.name}.json"
    metrics = run / "metrics.jsonl"
    if not (marker.is_file() and metrics.is_file()):
        return None
    from mtp.io import DataError, read_jsonl

    try:
        step = json.loads(marker.read_text()).get("step")
        rows = read_jsonl(metrics, tolerant_tail=True)  # a killed trainer may leave a torn last line
    except (ValueError, DataError):
        return None
    evals = [r for r in rows if "eval/a_1" in r and (step is None or r.get("step") == step)]
    return evals[-1] if evals else None


def heldout_acceptance(heads_dir: str | Path, temperature: float = 0.0) -> list[float] | None:
    """[a_1, ..., a_K] that the trainer measured on held-out data at the step this checkpoint was
    saved (from the run folder's metrics.jsonl and best.json / final.json); None when the folder is
    not inside a trainer's run folder or no evaluation was logged. temperature > 0: the chain's
    acceptance of sampled decoding (eval/sampled_a_k, sum_x min(p, q) at eval.sampled_temperature;
    `heldout_sampled_temperature` says which), None where the run did not record it (older runs)."""
    r = _heldout_row(heads_dir)
    if r is None:
        return None
    key = "eval/sampled_a_" if temperature > 0 else "eval/a_"
    out, k = [], 1
    while f"{key}{k}" in r:
        out.append(float(r[f"{key}{k}"]))
        k += 1
    return out or None


def heldout_sampled_temperature(heads_dir: str | Path) -> float | None:
    """The temperature of the sampled acceptance `heldout_acceptance(..., temperature > 0)` reads."""
    r = _heldout_row(heads_dir)
    return None if r is None or "eval/sampled_temperature" not in r else float(r["eval/sampled_temperature"])


def heldout_sampled_answers(heads_dir: str | Path) -> int | None:
    """How many sampled held-out answers that sampled acceptance was measured on: 0 when it was
    measured on greedy answers (which overstate sampled decoding), None where the run did not say."""
    r = _heldout_row(heads_dir)
    return None if r is None or "eval/sampled_answers" not in r else int(r["eval/sampled_answers"])


def _random_prompts(model, batch_size: int, prompt_len: int = 64, seed: int = 0) -> list[list[int]]:
    """A batch of random prompts to time a drafter on (ids 3.. of the model's vocabulary)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, model.config.vocab_size, (prompt_len,), generator=g).tolist() for _ in range(batch_size)]


@torch.no_grad()
def measure_draft_cost(model, drafter, lengths: Sequence[int], *, batch_size: int = 1, prompt_len: int = 64,
                       new_tokens: int = 24, seed: int = 0, repeats: int = 3) -> dict[int, float]:
    """{K: seconds per decode step spent in the drafter (propose + observe)} for chains of K, from
    short generations on random prompts (the drafter runs as in the engine, cache and all): the median
    over `repeats` rounds, each timing every K on its own prompts (a burst of load on a shared machine
    spreads over the lengths instead of bending one). One generation per K chose K = 1, 2 or 3 for the
    same head over six calls (round 22, docs/results/r22/auto_noise.py)."""
    from mtp.costmodel import drafter_step_seconds

    times: dict[int, list[float]] = {int(k): [] for k in lengths}
    for r in range(repeats):
        prompts = _random_prompts(model, batch_size, prompt_len, seed + r)
        for k in times:
            times[k].append(drafter_step_seconds(model, drafter, [prompts], k, max_new_tokens=new_tokens,
                                                 ignore_eos=True, warmup=r == 0))
    return {k: statistics.median(t) for k, t in times.items()}


def auto_draft_length(model, drafter, per_position: Sequence[float], *, batch_size: int = 1, prefix_len: int = 128,
                      max_k: int | None = None) -> tuple[int, dict[int, float]]:
    """Measure this machine's verify cost at `batch_size` and the drafter's cost per chain length,
    then choose_chain_length. Returns (K, {K: predicted speedup})."""
    from mtp.costmodel import interpolate, measure_forward_cost, monotone

    max_k = len(per_position) if max_k is None else min(max_k, len(per_position))
    if max_k < 1:
        return 0, {0: 1.0}
    C = interpolate(monotone(measure_forward_cost(model, prefix_len, tuple(range(1, max_k + 2)), repeats=5,
                                                  batch_size=batch_size)))
    ks = sorted({1, max_k})
    d = measure_draft_cost(model, drafter, ks, batch_size=batch_size)
    if len(ks) == 1:
        D = lambda k: d[ks[0]]  # noqa: E731
    else:  # linear in K between the two measured lengths
        D = lambda k: d[1] + (d[max_k] - d[1]) * (k - 1) / (max_k - 1)  # noqa: E731
    return choose_chain_length(per_position, C, D, max_k)


# ------------------------------------------------------------------------------------------------
# Tree shape from measurement: best_static_tree over held-out acceptance by depth and rank, sized by
# this machine's verify-cost curve and the drafter's own cost for each candidate tree.
# ------------------------------------------------------------------------------------------------

TREE_BUDGETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)  # node counts `auto_tree` considers


def heldout_rank_acceptance(heads_dir: str | Path) -> list[list[float]] | None:
    """acc[d][r]: P(the rank-r candidate at depth d+1 is right | the greedy path to it is right), as
    the trainer measured it on held-out data at the step this checkpoint was saved (eval/rank<r>_<d>,
    mtp.training.losses.rank_acceptance); None when not recorded (runs trained before it was)."""
    row = _heldout_row(heads_dir)
    if row is None or "eval/rank0_0" not in row:
        return None
    acc, d = [], 0
    while f"eval/rank0_{d}" in row:
        r, ranks = 0, []
        while f"eval/rank{r}_{d}" in row:
            ranks.append(float(row[f"eval/rank{r}_{d}"]))
            r += 1
        acc.append(ranks)
        d += 1
    return acc


def predicted_tree_speedup(tau: float, nodes: int, verify_cost: Callable[[int], float], draft_cost: float) -> float:
    """tau * C(1) / (C(nodes + 1) + D): the chain's S(K) above for a token tree of `nodes` nodes whose
    expected tokens per step is tau (`StaticTree.expected_accept_length`)."""
    return tau * verify_cost(1) / (verify_cost(nodes + 1) + draft_cost)


def choose_tree(acc: list[list[float]], verify_cost: Callable[[int], float], draft_cost: Callable,
                budgets: Sequence[int] = TREE_BUDGETS) -> tuple[object | None, dict[int, dict]]:
    """(the tree with the largest predicted speedup, or None when no tree beats plain decoding;
    {nodes: {"tau", "cost", "speedup", "depth"}} for each distinct candidate). Candidates are
    `best_static_tree(acc, N)` for N in `budgets`; draft_cost(tree) gives the drafter's seconds per
    step for that tree."""
    from mtp.tree import best_static_tree

    table, best, best_s = {}, None, 1.0
    seen = set()
    for n in sorted(budgets):
        tree = best_static_tree(acc, n)
        if tuple(tree.choices) in seen:  # fewer candidates with positive acceptance than n
            continue
        seen.add(tuple(tree.choices))
        d, tau = float(draft_cost(tree)), tree.expected_accept_length(acc)
        s = predicted_tree_speedup(tau, tree.size, verify_cost, d)
        table[tree.size] = {"tau": tau, "cost": d, "speedup": s, "depth": tree.depth}
        if s > best_s:
            best, best_s = tree, s
    return best, table


def auto_tree(model, head, acc: list[list[float]], *, batch_size: int = 1,
              budgets: Sequence[int] = TREE_BUDGETS) -> tuple[object | None, dict[int, dict]]:
    """Measure this machine's verify cost at `batch_size` (mtp.costmodel.machine_verify_cost) and the
    head's drafting cost for each candidate tree, then `choose_tree`."""
    from mtp.costmodel import drafter_step_seconds, machine_verify_cost

    C = machine_verify_cost(model, batch_size)
    prompts = _random_prompts(model, batch_size)
    warm = [True]  # one untimed generation before the first tree's timing

    def draft_cost(tree) -> float:
        s = drafter_step_seconds(model, head.as_drafter(tree=tree), [prompts], None, max_new_tokens=16,
                                 ignore_eos=True, warmup=warm[0])
        warm[0] = False
        return s

    return choose_tree(acc, C, draft_cost, budgets)
