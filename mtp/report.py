"""Report text: a results folder's report.md (`write_report`), and tables and plots over several
results folders (the demo's report, the README's table).

A "run" is a folder holding eval.bench folders named t0, t1, ... (one per temperature), as
`python -m train.demo` writes them. Every number comes from their summary.json files (computed by
mtp.results), so the README table is generated, never typed:

    python -m eval.report results/demo [results/demo-gemma ...] [--readme README.md]
"""
from __future__ import annotations

import json
from pathlib import Path

from mtp.io import atomic_write_text
from mtp.results import load

BEGIN, END = "<!-- results-table:begin -->", "<!-- results-table:end -->"



def _wait_policy(meta: dict) -> str:
    """", OpenMP wait policy X" for a CPU run's header: absolute tokens/s depend on it (round 23: the
    same benchmark ran at 16, 20 and 26 tok/s under PASSIVE, OpenMP's default and ACTIVE on 2 cores,
    with the same speedups), so a reader comparing tokens/s across runs must know it."""
    env = meta.get("env") or {}
    if meta.get("device") not in (None, "cpu") or "OMP_WAIT_POLICY" not in env:
        return ""
    return f", OpenMP wait policy {env['OMP_WAIT_POLICY'] or 'default'}"

def fmt(x, nd=3) -> str:
    """A table cell: NaN / None as "-", floats to nd decimals, lists shortened."""
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    if isinstance(x, list):
        return "[" + ", ".join(f"{v:.2f}" for v in x[:8]) + (", ..." if len(x) > 8 else "") + "]"
    return str(x)


def markdown_table(rows: list[dict], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_report(path: str | Path) -> str:
    """report.md of a results folder: what it holds (the benchmark's definitions, overall,
    per-category and per-length tables, greedy mismatches; the cost model; the batch sweep) and
    its plots. Returns the markdown."""
    path = Path(path)
    res = load(path)
    meta = res.meta
    cfg = meta.get("config", {})
    title = cfg.get("title") or f"Benchmark: {cfg.get('model', '?')} on {cfg.get('suite', '?')}"
    lines = [f"# {title}", "",
             f"temperature {cfg.get('temperature')}, max_new_tokens {cfg.get('max_new_tokens')}, "
             f"repeats {cfg.get('repeats')}, dtype {meta.get('dtype')}, threads {meta.get('threads')}"
             f"{_wait_policy(meta)}, device {meta.get('device')}, git {meta.get('git', {}).get('hash', '?')[:10]}"
             f"{' (dirty)' if meta.get('git', {}).get('dirty') else ''}", ""]
    if res.raw_summary.get("methods"):
        lines += _bench_lines(res.raw_summary)
    if res.verify_cost is not None and len(res.verify_cost):
        lines += ["## Verify cost", "", "One target forward over m new tokens after a cached prefix (median ms):", "",
                  markdown_table(res.verify_cost.to_dict("records"), list(res.verify_cost.columns)), ""]
    if (path / "costmodel.md").exists():
        lines += ["Predicted vs measured speedup: [costmodel.md](costmodel.md).", ""]
    if res.sweep is not None and len(res.sweep):
        lines += ["## Throughput vs interactivity", "", markdown_table(res.sweep.to_dict("records"), SWEEP_COLS), ""]
    from mtp.plots import BENCH_PLOTS

    pngs = [n for n in (*BENCH_PLOTS, "costmodel.png", "sweep.png") if (path / n).exists()]
    lines += ["## Plots", ""] + [f"![{n}]({n})" for n in pngs]
    lines += ["", "Timings on a shared machine are noisy; compare the spread before reading small differences."]
    text = "\n".join(lines) + "\n"
    atomic_write_text(path / "report.md", text)
    return text


SWEEP_COLS = ["label", "method", "K", "batch_size", "num_prompts", "tokens_per_s_per_seq", "tokens_per_s_total",
              "tokens_per_s_total_spread", "tau", "wall_s", "pareto"]


def _bench_lines(s: dict) -> list[str]:
    """The benchmark part of report.md, from summary.json."""
    lines = [f"Baseline for speedup: **{s.get('baseline')}**.", "",
             "Definitions: tau = tokens per decode-step target forward incl. the bonus token (the prefill forward "
             "excluded; tokens_per_forward includes it); a_k = P(>= k drafts accepted) over the steps that drafted "
             ">= k; draft acceptance = accepted / drafted; draft cost = drafting time per step / target step time; "
             "tokens/s = mean over prompts (turns summed), "
             "median over repeats; speedup = ratio of mean per-prompt tokens/s vs the baseline per repeat, median "
             "over repeats, spread = max - min.", ""]
    cols = ["method", "tau", "tokens_per_forward", "draft_acceptance_rate", "accept_rate_per_position", "draft_cost",
            "tokens_per_s", "speedup", "speedup_spread", "exact_match", "num_prompts", "repeats"]
    rows = [dict(method=m, **e["overall"]) for m, e in s.get("methods", {}).items()]
    lines += ["## Overall", "", markdown_table(rows, cols), ""]
    for scope in ("category", "length"):
        rows = [dict(method=m, group=g, **v) for m, e in s.get("methods", {}).items() for g, v in e[scope].items()]
        if rows:
            rows.sort(key=lambda r: (r["group"], r["method"]))
            lines += [f"## Per {scope}", "", markdown_table(rows, ["group", "method", "tau", "draft_acceptance_rate",
                                                                   "tokens_per_s", "speedup", "exact_match"]), ""]
    mm = s.get("mismatches", [])
    if s.get("greedy"):
        lines += ["## Greedy exact match", "",
                  f"{len(mm)} mismatching cells (first differing position, target logit gap there; "
                  "a gap near 0 is a near tie that numerics can flip)." if mm else "Every output equals the baseline's.", ""]
        if mm:
            lines += [markdown_table(mm[:30], ["method", "prompt_id", "turn", "repeat", "first_diff", "logit_gap"]), ""]
    return lines


def temperature_folders(run: str | Path) -> dict[float, Path]:
    """{temperature: folder} for the eval.bench folders of a run (t0, t1, ... with a summary)."""
    out = {}
    for p in sorted(Path(run).glob("t*")):
        if (p / "summary.json").is_file() and (p / "meta.json").is_file():
            t = json.loads((p / "meta.json").read_text()).get("config", {}).get("temperature")
            if t is not None:
                out[float(t)] = p
    return dict(sorted(out.items()))


def _summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def _fmt_sp(e: dict) -> str:
    sp = e.get("speedup")
    if sp is None:
        return "-"
    lo, hi = e.get("speedup_min"), e.get("speedup_max")
    if lo is not None and hi is not None and hi - lo > 1e-9:
        return f"{sp:.2f}x [{lo:.2f}, {hi:.2f}]"
    return f"{sp:.2f}x"


def _f(x, nd=2) -> str:
    return "-" if x is None or (isinstance(x, float) and x != x) else f"{x:.{nd}f}"


def run_rows(run: str | Path) -> list[dict]:
    """One row per method: T=0 tau, a_1..a_4, draft acceptance, draft cost, speedups at each T."""
    temps = temperature_folders(run)
    if not temps:
        return []
    sums = {t: _summary(p) for t, p in temps.items()}
    meta = json.loads((next(iter(temps.values())) / "meta.json").read_text())
    model = meta.get("config", {}).get("model", "?")
    methods = list(dict.fromkeys(m for s in sums.values() for m in s.get("methods", {})))
    rows = []
    for m in methods:
        row = {"model": model, "method": m}
        for t, s in sums.items():
            e = s["methods"].get(m, {}).get("overall")
            if e is None:
                continue
            tag = f"T={t:g}"
            row[f"tau {tag}"] = _f(e.get("tau"))
            row[f"speedup {tag}"] = _fmt_sp(e)
            if t == min(sums):
                a = e.get("accept_rate_per_position") or []
                row["a_1..a_4"] = " / ".join(_f(x) for x in a[:4]) if a else "-"
                row["draft acc."] = _f(e.get("draft_acceptance_rate"))
                row["draft cost"] = _f(e.get("draft_cost"))
                row["tok/s"] = _f(e.get("tokens_per_s"), 1)
                row["exact"] = _f(e.get("exact_match")) if s.get("greedy") else "-"
        rows.append(row)
    return rows


def category_rows(run: str | Path, temperature: float = 0.0) -> list[dict]:
    temps = temperature_folders(run)
    if temperature not in temps:
        return []
    s = _summary(temps[temperature])
    rows = []
    for m, e in s.get("methods", {}).items():
        row = {"method": m}
        for g, v in sorted(e.get("category", {}).items()):
            row[g] = f"{_f(v.get('tau'))} / {_f(v.get('speedup'))}x"
        rows.append(row)
    return rows


def _cols(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def tables(runs: list[str | Path]) -> str:
    """Markdown: the overall table of every run (with a `run` column, the folder's name, when there
    are several), then per-category tau / speedup at T=0, then each head family's best drafting shape
    where a run benchmarked its chain and its tree (`shape_rows`)."""
    rows = [r if len(runs) == 1 else {"model": r["model"], "run": Path(run).name, **r}
            for run in runs for r in run_rows(run)]
    if not rows:
        return "(no results yet)"
    out = [markdown_table(rows, _cols(rows)), ""]
    for run in runs:
        cat = category_rows(run)
        if cat:
            model = run_rows(run)[0]["model"]
            out += [f"Per category at T=0, {model} (`{run}`): tau / speedup", "", markdown_table(cat, _cols(cat)), ""]
    for run in runs:
        for temp, folder in temperature_folders(run).items():
            shapes = shape_rows(folder)
            if shapes:
                model = run_rows(run)[0]["model"]
                out += [f"Each family's best drafting shape at T={temp:g}, {model} (`{run}`): the fastest of its chain, "
                        "its dynamic tree and the cost model's static tree, where two were run (other shape: tau / speedup)", "", markdown_table(shapes, _cols(shapes)), ""]
    return "\n".join(out).rstrip() + "\n"


def reproduce_lines(runs: list[str | Path]) -> list[str]:
    lines = []
    for run in runs:
        for t, p in temperature_folders(run).items():
            meta = json.loads((p / "meta.json").read_text())
            lines.append(f"- `{p}`: {meta.get('cpu', '?')} ({meta.get('threads', '?')} threads), "
                         f"git {meta.get('git', {}).get('hash', '?')[:10]}; `{command_line(meta)}`")
    return lines


def command_line(meta: dict) -> str:
    """The command that made a results folder, from its meta.json: `python -m eval.bench ...`, or
    the script it ran (PYTHONPATH=. for one under docs/results), with OMP_WAIT_POLICY in front
    where it was set to other than the eval scripts' PASSIVE (absolute tokens/s depend on it)."""
    argv = list(meta.get("argv") or ["eval/bench.py"])
    script, args = argv[0], " ".join(argv[1:])
    cmd = "python -m eval.bench" if script.replace("\\", "/").endswith("eval/bench.py") else (
        f"{'PYTHONPATH=. ' if not script.startswith(('eval/', 'train/')) else ''}python {script}")
    policy = (meta.get("env") or {}).get("OMP_WAIT_POLICY")
    env = f"OMP_WAIT_POLICY={policy} " if policy is not None and policy != "PASSIVE" else ""
    return f"{env}{cmd} {args}".rstrip()


def plot_positions(runs: list[str | Path], out: str | Path):
    """Per-position acceptance a_k of every drafting method (T=0 solid, T=1 dashed when present):
    one panel per run, so a legend names only that run's methods."""
    import math

    from mtp.plots import pyplot

    plt = pyplot()
    cols = min(3, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.3 * rows), squeeze=False, sharey=True)
    for ax, run in zip(axes.flat, runs):
        model, colour = "?", {}
        for t, p in temperature_folders(run).items():
            s = _summary(p)
            if (p / "meta.json").exists():
                model = json.loads((p / "meta.json").read_text()).get("config", {}).get("model", model)
            for m, e in s.get("methods", {}).items():
                a = e["overall"].get("accept_rate_per_position") or []
                if a:  # one colour per method in both temperatures
                    c = colour.setdefault(m, f"C{len(colour) % 10}")
                    ax.plot(range(1, len(a) + 1), a, marker="o", markersize=3, linestyle="-" if t == 0 else "--",
                            color=c, label=f"{m}" + ("" if t == 0 else f" T={t:g}"))
        ax.set(xlabel="draft position k", ylim=(0, 1.02), title=f"{Path(run).name} ({model})")
        ax.title.set_fontsize(9)
        if ax.lines:
            ax.legend(fontsize=6)
    for ax in axes[:, 0]:
        ax.set_ylabel("a_k = P(>= k drafts accepted)")
    for ax in list(axes.flat)[len(runs):]:
        ax.set_visible(False)
    fig.suptitle("Per-position acceptance (T=0 solid, T=1 dashed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


SHAPES = {"chain": "", "tree": "-tree", "autotree": "-autotree"}  # a family's shapes: <name>, <name>-tree, <name>-autotree


def shape_rows(folder: str | Path) -> list[dict]:
    """Each head family's best drafting shape in one bench folder: for every family benchmarked in
    at least two of its shapes (`<name>` its chain, `<name>-tree` its dynamic tree, as the full
    preset names them, `<name>-autotree` the static tree the cost model chose), the fastest, with its
    tau and speedup against prompt lookup's tau (`pld`) and plain decoding (1.0x), and the other
    shapes' tau / speedup. Empty when the folder holds no such family."""
    methods = _summary(Path(folder)).get("methods", {})
    pld_tau = (methods.get("pld") or {}).get("overall", {}).get("tau")
    families = dict.fromkeys(next((n[: -len(x)] for x in SHAPES.values() if x and n.endswith(x)), n) for n in methods)
    rows = []
    for name in families:
        shapes = {k: methods[name + sfx]["overall"] for k, sfx in SHAPES.items() if name + sfx in methods}
        if len(shapes) < 2:
            continue
        shape, e = max(shapes.items(), key=lambda kv: kv[1].get("speedup") or 0.0)
        tau, sp = e.get("tau"), e.get("speedup")
        rows.append({"family": name, "best shape": shape, "tau": _f(tau), "speedup": _fmt_sp(e),
                     "other shape": ", ".join(f"{k} {_f(o.get('tau'))} / {_fmt_sp(o)}" if len(shapes) > 2 else
                                              f"{_f(o.get('tau'))} / {_fmt_sp(o)}"
                                              for k, o in shapes.items() if k != shape),
                     "draft cost": _f(e.get("draft_cost")), "lookup tau": _f(pld_tau),
                     "beats lookup's tau": "-" if pld_tau is None or tau is None else ("yes" if tau > pld_tau else "no"),
                     "faster than plain": "-" if sp is None else ("yes" if sp > 1.0 else "no")})
    return rows


def time_rows(folder: str | Path) -> list[dict]:
    """Where each kit method's time went in one bench folder, from what the run timed itself
    (mtp.costmodel.time_breakdown): shares of prefill, verify forwards, drafting and the rest of
    the loop; and the speedup over `vanilla` that the run's own forward costs predict
    (mtp.costmodel.predict_in_run) next to the measured one. Empty when the run timed nothing
    (results written before forwards were timed, or no `vanilla`)."""
    from mtp import costmodel, results as R

    samples = R.read_samples(Path(folder) / "samples.jsonl")
    plain = [s for s in samples if s["method"] == "vanilla"]
    curves = costmodel.run_cost_curves(samples)
    rows = []
    for name in dict.fromkeys(s["method"] for s in samples):
        ms = [s for s in samples if s["method"] == name]
        if not plain or not all(map(costmodel.timed, ms)):
            continue
        b = costmodel.time_breakdown(ms, None, 0.0)
        measured = R.speedup(ms, plain)[0]
        pred = 1.0 if name == "vanilla" else costmodel.predict_in_run(ms, curves).get("predicted_speedup_in_run")
        rows.append({"method": name, "prefill": _f(b["prefill_share"]), "verify": _f(b["verify_share"]),
                     "drafting": _f(b["draft_share"]), "rest of loop": _f(b["other_share"]),
                     "predicted vs vanilla": f"{pred:.2f}x" if pred else "-", "measured vs vanilla": f"{measured:.2f}x",
                     "gap": _f(pred / measured - 1) if pred and measured == measured else "-"})
    return rows


def demo_report(results: str | Path, runs: str | Path, *, model: str, preset: str) -> str:
    """results/<name>/report.md (+ acceptance.png): the overall and per-category tables, the
    training summary of every head, how to reproduce. Returns the markdown."""
    results, runs = Path(results), Path(runs)
    lines = [f"# mtp demo: {model}, preset {preset}", "",
             "tau = tokens per decode-step target forward (bonus token included); a_k = P(>= k drafts accepted) "
             "over steps that drafted >= k; draft cost = drafting time per step / target step time; speedup = "
             "ratio of mean per-prompt tokens/s over the faster of hf and vanilla, same run, interleaved "
             "(median [min, max] over repeats).", "", tables([results]), "## Heads", ""]
    for best in sorted(runs.glob("*/best.json")):
        info = json.loads(best.read_text())
        lines.append(f"- `{best.parent.name}`: held-out expected tau {info.get('best_tau', float('nan')):.3f} at step "
                     f"{info.get('best_step')} (`{best.parent / 'best'}`)")
    for temp, folder in temperature_folders(results).items():
        rows = time_rows(folder)
        if rows:
            lines += ["", f"## Where the time goes, T={temp:g}", "",
                      "Shares of each method's wall time, timed in the run: prefill, target forwards that verify "
                      "(acceptance included), drafting, and the rest of the decode loop. Predicted: the speedup "
                      "over `vanilla` from the run's own median forward cost by size (all methods pooled), with "
                      "each generation's steps, prefill and drafting time; gap = predicted / measured - 1.", "",
                      markdown_table(rows, list(rows[0]))]
    lines += ["", "## Reproduce", ""] + reproduce_lines([results])
    try:
        plot_positions([results], results / "acceptance.png")
        lines += ["", "![per-position acceptance](acceptance.png)"]
    except Exception as e:  # plotting is optional; the tables are the result
        lines += ["", f"(plot skipped: {type(e).__name__}: {e})"]
    text = "\n".join(lines) + "\n"
    atomic_write_text(results / "report.md", text)
    return text


def splice_readme(readme: str | Path, table: str) -> None:
    """Replace the text between the results-table markers of a README (which must exist)."""
    readme = Path(readme)
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} has no {BEGIN} ... {END} markers to replace")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    atomic_write_text(readme, head + BEGIN + "\n" + table + END + tail)
