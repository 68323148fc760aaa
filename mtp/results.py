"""Benchmark results: the metrics (defined once), the files of a results folder, and the folder as
DataFrames (plots: mtp.plots; report.md: mtp.report; the runner that writes samples: mtp.bench).

Definitions (REFERENCES.md; per-step counts come from `mtp.stats.SpecStats`):
- tau: tokens emitted per target forward, bonus/correction token included (plain decoding: 1).
- accept_rate_per_position[k-1] = a_k = P(>= k drafts accepted in a speculative step).
- draft_acceptance_rate: accepted drafts / drafted tokens.
- tokens_per_s: per repeat, the mean over prompts of (new tokens / wall time), turns of a prompt
  summed first (as Spec-Bench's speed.py); reported as the median over repeats.
- speedup: per repeat, mean per-prompt tokens/s of the method / that of the baseline on the same
  prompts (a ratio of means); median over repeats, speedup_spread = max - min over repeats.
- exact_match (greedy runs only): share of (prompt, turn, repeat) cells whose output equals the
  baseline's output for the same cell.

Folder contract (written through `mtp.bench.SuiteRun` by eval.bench, eval.bench_foundation,
eval.bench_trees and train.figures; eval.costmodel and eval.sweep add their tables):
    samples.jsonl   one line per (method, prompt, turn, repeat): SAMPLE_KEYS (+ method_key,
                    draft_lengths, draft_depths, draft_time_s, length, prompt_tokens, max_new_tokens;
                    kit methods: prefill_time_s and step_costs, [drafted, tree, seconds] per decode
                    forward, the times eval.costmodel and the demo report split and model;
                    choosing drafters: choices, {proposal: steps} of the generation)
    summary.json    {"baseline", "greedy", "methods": {m: {"overall": M, "category": {c: M},
                     "length": {mix: M}}}, "mismatches": [...]} with M holding SUMMARY_KEYS and extras
    summary.csv     the same, one row per (method, scope, group)
    meta.json       config, git hash, versions, hardware (mtp.runinfo.collect_meta)
    costmodel.json  verify-cost curve and predicted vs measured speedup (eval.costmodel)
    sweep.json      throughput vs interactivity points over batch sizes (eval.sweep)
    report.md, *.png
"""
from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from mtp.io import atomic_write_json, atomic_write_text, jsonable, read_jsonl
from mtp.stats import SpecStats

SAMPLE_KEYS = ("method", "prompt_id", "category", "turn", "repeat", "output_ids", "new_tokens", "wall_time_s",
               "target_forwards", "accept_lengths")
SUMMARY_KEYS = ("tau", "accept_rate_per_position", "draft_acceptance_rate", "tokens_per_s", "speedup",
                "speedup_spread", "exact_match")
BASELINE_CANDIDATES = ("hf", "vanilla")

# ------------------------------------------------------------------------------------------------
# Files: append-only samples, atomic summaries
# ------------------------------------------------------------------------------------------------


def json_line(record: dict) -> str:
    """One JSONL line (NaN / inf as null)."""
    return json.dumps(jsonable(record)) + "\n"


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one line and flush it to disk (a crash loses at most the line being written)."""
    with open(path, "a") as f:
        f.write(json_line(record))
        f.flush()
        os.fsync(f.fileno())


def read_samples(path: str | Path) -> list[dict]:
    """The records of a results folder's append-only samples.jsonl ([] when there is none yet); a
    torn last line (a run killed mid-write) is ignored, a malformed line raises DataError."""
    return read_jsonl(path, tolerant_tail=True, hint="fix or delete the line (its cell runs again)")


def _read_json(path: Path):
    """json.load of a results file; DataError naming the file and line when it is malformed."""
    from mtp.data.prompts import DataError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno}); rerun the step that "
                        "writes it") from None


def repair_jsonl(path: str | Path) -> None:
    """Cut a torn last line so that appends start on a fresh line."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def cell_key(s: dict) -> tuple[str, str, int, int]:
    return s["method"], s["prompt_id"], int(s["turn"]), int(s["repeat"])


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------


def spec_stats(samples: Iterable[dict]) -> SpecStats:
    """Merge samples into one SpecStats (tau, per-position acceptance, histogram...)."""
    total = SpecStats()
    for s in samples:
        total = total + SpecStats(target_forwards=int(s["target_forwards"]), new_tokens=int(s["new_tokens"]),
                                  prefills=1 if int(s["target_forwards"]) > 0 else 0,
                                  accept_lengths=list(s.get("accept_lengths") or []),
                                  draft_lengths=list(s.get("draft_lengths") or _default_drafts(s)),
                                  draft_depths=list(s.get("draft_depths") or []),
                                  wall_time_s=float(s["wall_time_s"]), draft_time_s=float(s.get("draft_time_s") or 0.0))
    return total


def _default_drafts(s: dict) -> list[int]:
    # Files without draft_lengths: assume each step drafted at least what it accepted.
    return list(s.get("accept_lengths") or [])


def per_prompt_tokens_per_s(samples: Iterable[dict]) -> dict[int, dict[str, float]]:
    """{repeat: {prompt_id: tokens/s}} with a prompt's turns summed first (Spec-Bench)."""
    tok: dict[tuple[int, str], float] = defaultdict(float)
    sec: dict[tuple[int, str], float] = defaultdict(float)
    for s in samples:
        k = (int(s["repeat"]), s["prompt_id"])
        tok[k] += s["new_tokens"]
        sec[k] += s["wall_time_s"]
    out: dict[int, dict[str, float]] = defaultdict(dict)
    for (r, p), t in tok.items():
        out[r][p] = t / sec[(r, p)] if sec[(r, p)] > 0 else float("nan")
    return dict(out)


def _median_spread(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v == v]
    if not vals:
        return float("nan"), float("nan")
    return statistics.median(vals), max(vals) - min(vals)


def tokens_per_s(samples: Iterable[dict]) -> tuple[float, float]:
    """(median over repeats, max - min over repeats) of the mean per-prompt tokens/s."""
    per = per_prompt_tokens_per_s(samples)
    return _median_spread([statistics.fmean(v.values()) for v in per.values() if v])


def speedup_per_repeat(method_samples: Iterable[dict], baseline_samples: Iterable[dict]) -> dict[int, float]:
    """{repeat: mean per-prompt tokens/s of the method / that of the baseline}, over the prompts
    both completed in that repeat (a ratio of means, as Spec-Bench)."""
    m, b = per_prompt_tokens_per_s(method_samples), per_prompt_tokens_per_s(baseline_samples)
    out = {}
    for r in sorted(set(m) & set(b)):
        common = sorted(set(m[r]) & set(b[r]))
        if common:
            out[r] = statistics.fmean(m[r][p] for p in common) / statistics.fmean(b[r][p] for p in common)
    return out


def speedup(method_samples: Iterable[dict], baseline_samples: Iterable[dict]) -> tuple[float, float]:
    """(median, max - min) over repeats of `speedup_per_repeat`."""
    return _median_spread(list(speedup_per_repeat(list(method_samples), list(baseline_samples)).values()))


def first_difference(a: list[int], b: list[int]) -> int | None:
    """First index where two token lists differ (a length difference counts); None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def exact_match(method_samples: Iterable[dict], baseline_samples: Iterable[dict]) -> tuple[float, list[dict]]:
    """(share of cells equal to the baseline's cell, mismatches). A cell is compared with the
    baseline's same (prompt, turn, repeat), else its repeat 0. Mismatch: method, prompt_id, turn,
    repeat, first_diff."""
    base = {(s["prompt_id"], int(s["turn"]), int(s["repeat"])): s["output_ids"] for s in baseline_samples}
    n, ok, bad = 0, 0, []
    for s in method_samples:
        key = (s["prompt_id"], int(s["turn"]), int(s["repeat"]))
        ref = base.get(key, base.get((key[0], key[1], 0)))
        if ref is None:
            continue
        n += 1
        pos = first_difference(s["output_ids"], ref)
        if pos is None:
            ok += 1
        else:
            bad.append({"method": s["method"], "prompt_id": key[0], "turn": key[1], "repeat": key[2],
                        "first_diff": pos})
    return (ok / n if n else float("nan")), bad


def draft_cost(st: SpecStats) -> float:
    """Drafting time per speculative step over the rest of a step's time (verify forward plus
    bookkeeping) per target forward: the c of Leviathan et al. (NaN without drafting)."""
    steps = len(st.accept_lengths)
    rest = st.wall_time_s - st.draft_time_s
    if not steps or st.draft_time_s <= 0 or rest <= 0 or not st.target_forwards:
        return float("nan")
    return (st.draft_time_s / steps) / (rest / st.target_forwards)


def choice_shares(samples: list[dict]) -> dict[str, float] | None:
    """A choosing drafter's share of steps per proposal over the samples (None: no sample has
    `choices`); e.g. {"union": .2, "lookup": .3, "heads": .4, "plain": .1} for adapt+heads."""
    tot: dict[str, int] = defaultdict(int)
    for s in samples:
        for k, v in (s.get("choices") or {}).items():
            tot[k] += v
    n = sum(tot.values())
    return {k: v / n for k, v in tot.items()} if n else None


def choose_baseline(samples: list[dict], methods: list[str]) -> str:
    """The faster (median tokens/s) of hf and vanilla among `methods`, else the first method."""
    cands = [m for m in BASELINE_CANDIDATES if m in methods]
    if not cands:
        return methods[0]
    return max(cands, key=lambda m: _nan_low(tokens_per_s([s for s in samples if s["method"] == m])[0]))


def _nan_low(x: float) -> float:
    return x if x == x else -math.inf


def group_metrics(method_samples: list[dict], baseline_samples: list[dict], greedy: bool) -> dict:
    """SUMMARY_KEYS (and extras) for one method on one group of prompts."""
    st = spec_stats(method_samples)
    tps, tps_spread = tokens_per_s(method_samples)
    per_rep = speedup_per_repeat(method_samples, baseline_samples)
    sp, sp_spread = _median_spread(list(per_rep.values()))
    em = exact_match(method_samples, baseline_samples)[0] if greedy else float("nan")
    return {
        "tau": st.tau,
        "tokens_per_forward": st.tokens_per_forward,
        "accept_rate_per_position": st.per_position_acceptance(),
        "draft_acceptance_rate": st.draft_acceptance_rate,
        "tokens_per_s": tps,
        "speedup": sp,
        "speedup_spread": sp_spread,
        "exact_match": em,
        "tokens_per_s_spread": tps_spread,
        "speedup_min": min(per_rep.values(), default=float("nan")),
        "speedup_max": max(per_rep.values(), default=float("nan")),
        "accept_length_histogram": st.accept_length_histogram(),
        "mean_draft_length": statistics.fmean(st.draft_lengths) if st.draft_lengths else 0.0,
        "draft_cost": draft_cost(st),
        "choice_shares": choice_shares(method_samples),
        "new_tokens": st.new_tokens,
        "target_forwards": st.target_forwards,
        "num_prompts": len({s["prompt_id"] for s in method_samples}),
        "num_samples": len(method_samples),
        "repeats": len({s["repeat"] for s in method_samples}),
    }


def summarize(samples: list[dict], methods: list[str] | None = None, *, greedy: bool,
              baseline: str | None = None, mismatch_gaps: dict | None = None) -> dict:
    """The summary.json object. mismatch_gaps: {(method, prompt_id, turn, repeat): logit gap}."""
    methods = methods or list(dict.fromkeys(s["method"] for s in samples))
    methods = [m for m in methods if any(s["method"] == m for s in samples)]
    if not methods:
        return {"baseline": None, "greedy": greedy, "methods": {}, "mismatches": []}
    baseline = baseline or choose_baseline(samples, methods)
    by_m = {m: [s for s in samples if s["method"] == m] for m in methods}
    base = by_m[baseline]
    out: dict = {"baseline": baseline, "greedy": greedy, "methods": {}, "mismatches": []}
    for m in methods:
        ms = by_m[m]
        entry = {"overall": group_metrics(ms, base, greedy), "category": {}, "length": {}}
        for scope, key in (("category", "category"), ("length", "length")):
            for g in sorted({s.get(key) or "" for s in ms}):
                if not g:
                    continue
                entry[scope][g] = group_metrics([s for s in ms if s.get(key) == g],
                                                [s for s in base if s.get(key) == g], greedy)
        out["methods"][m] = entry
        if greedy and m != baseline:
            for mm in exact_match(ms, base)[1]:
                mm["baseline"] = baseline
                mm["logit_gap"] = (mismatch_gaps or {}).get((m, mm["prompt_id"], mm["turn"], mm["repeat"]))
                out["mismatches"].append(mm)
    return out


def summary_rows(summary: dict) -> list[dict]:
    """Flat rows (method, scope, group, metrics...) for summary.csv; lists become JSON strings."""
    rows = []
    for m, entry in summary["methods"].items():
        groups = [("overall", "all", entry["overall"])]
        groups += [(scope, g, v) for scope in ("category", "length") for g, v in entry[scope].items()]
        for scope, g, v in groups:
            row = {"method": m, "scope": scope, "group": g, "baseline": summary["baseline"]}
            row.update({k: json.dumps(x) if isinstance(x, (list, dict)) else x for k, x in v.items()})
            rows.append(row)
    return rows


def write_csv(path: str | Path, rows: list[dict], cols: list[str] | None = None) -> None:
    """rows as CSV (columns: cols, else the first row's keys; NaN as an empty cell), atomically."""
    import csv
    import io

    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=cols or list(rows[0]), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if isinstance(x, float) and x != x else x) for k, x in r.items()})
    atomic_write_text(path, buf.getvalue())


def write_summary(out_dir: str | Path, summary: dict) -> None:
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "summary.json", summary)
    write_csv(out_dir / "summary.csv", summary_rows(summary))


def check_resume(out: Path, config: dict, keys: tuple[str, ...], overwrite: bool) -> None:
    """Before a run writes into `out`: with overwrite, delete the old samples and what was made
    from them; else refuse (SystemExit) a folder whose samples came from a config that differs in
    any of `keys`."""
    out = Path(out)
    if overwrite:
        for name in ("samples.jsonl", "summary.json", "summary.csv", "report.md"):
            (out / name).unlink(missing_ok=True)
        return
    if (out / "meta.json").exists() and (out / "samples.jsonl").exists():
        old = _read_json(out / "meta.json").get("config", {})
        diff = {k: (old.get(k), config.get(k)) for k in keys if old.get(k) != config.get(k)}
        if diff:
            raise SystemExit(f"{out} holds a run with a different config {diff}; use another --out or --overwrite")


# ------------------------------------------------------------------------------------------------
# Loading a results folder
# ------------------------------------------------------------------------------------------------


@dataclass
class Results:
    """A results folder as pandas DataFrames.

    samples: one row per samples.jsonl line. summary: summary.csv (lists parsed back).
    positions: long table (method, scope, group, position k, a_k). histogram: long table
    (method, accepted j, steps). mismatches: greedy mismatches. costmodel / sweep: the tables of
    `eval.costmodel` / `eval.sweep` when the folder holds them (else empty).
    """

    path: Path
    meta: dict
    samples: "object"
    summary: "object"
    positions: "object"
    histogram: "object"
    mismatches: "object"
    costmodel: "object" = None
    verify_cost: "object" = None
    sweep: "object" = None
    raw_summary: dict = field(default_factory=dict)


def load(path: str | Path) -> Results:
    """Load a folder written by eval.bench (and/or eval.costmodel, eval.sweep) into DataFrames."""
    import pandas as pd

    path = Path(path)
    meta = _read_json(path / "meta.json") if (path / "meta.json").exists() else {}
    samples = pd.DataFrame(read_samples(path / "samples.jsonl"))
    if len(samples):
        samples["tokens_per_s"] = samples["new_tokens"] / samples["wall_time_s"]
        samples["tau"] = (samples["new_tokens"] - 1) / (samples["target_forwards"] - 1)  # as SpecStats.tau
    raw = _read_json(path / "summary.json") if (path / "summary.json").exists() else {}
    rows = summary_rows(raw) if raw.get("methods") else []
    for r in rows:
        for k, v in r.items():
            if isinstance(v, str) and v.startswith("["):
                r[k] = json.loads(v)
    summary = pd.DataFrame(rows)
    pos, hist = [], []
    for r in rows:
        for k, a in enumerate(r.get("accept_rate_per_position") or [], 1):
            pos.append({"method": r["method"], "scope": r["scope"], "group": r["group"], "position": k, "rate": a})
        if r["scope"] == "overall":
            for j, c in enumerate(r.get("accept_length_histogram") or []):
                hist.append({"method": r["method"], "accepted": j, "steps": c})
    cm = path / "costmodel.json"
    costmodel = verify = None
    if cm.exists():
        d = json.loads(cm.read_text())
        costmodel = pd.DataFrame(d.get("methods", []))
        verify = pd.DataFrame(d.get("verify_cost", []))
    sw = path / "sweep.json"
    sweep = pd.DataFrame(json.loads(sw.read_text()).get("points", [])) if sw.exists() else None
    return Results(path, meta, samples, summary, pd.DataFrame(pos), pd.DataFrame(hist),
                   pd.DataFrame(raw.get("mismatches", [])), costmodel, verify, sweep, raw)


# ------------------------------------------------------------------------------------------------
# Throughput sweeps
# ------------------------------------------------------------------------------------------------


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both x and y (larger is better)."""
    idx = []
    for i, (x, y) in enumerate(points):
        if not any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            idx.append(i)
    return sorted(idx, key=lambda i: points[i][0])
