"""Plots of a results folder (matplotlib, imported lazily; each returns the figure and saves it
when `out` is given). `write_plots` draws every plot a folder has data for."""
from __future__ import annotations

import os
from pathlib import Path

from mtp.results import Results, load, pareto_front


def pyplot():
    """matplotlib.pyplot, on the Agg backend unless a backend was chosen (headless machines)."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg",) and not os.environ.get("MPLBACKEND") and \
            "inline" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out):
    if out is not None:
        fig.savefig(out, dpi=110, bbox_inches="tight")
    return fig


def plot_acceptance_by_position(res: Results, out=None):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    df = res.positions
    for m, g in (df[df.scope == "overall"].groupby("method", sort=False) if len(df) else []):
        ax.plot(g.position, g.rate, marker="o", label=m)
    ax.set(xlabel="draft position k", ylabel="a_k = P(>= k accepted)", ylim=(0, 1.02),
           title="Acceptance by position")
    if len(df):
        ax.legend()
    return _save(fig, out)


def _bars(ax, table, ylabel, title):
    """table: {group: {method: value}} as grouped bars."""
    groups = list(table)
    methods = list(dict.fromkeys(m for g in groups for m in table[g]))
    w = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        ax.bar([x + i * w for x in range(len(groups))], [table[g].get(m, float("nan")) for g in groups], w, label=m)
    ax.set_xticks([x + w * (len(methods) - 1) / 2 for x in range(len(groups))], groups, rotation=30, ha="right")
    ax.set(ylabel=ylabel, title=title)
    if methods:
        ax.legend(fontsize=8)


def plot_tau_by_category(res: Results, out=None):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    df = res.summary
    table: dict = {}
    if len(df):
        for _, r in df[df.scope.isin(["category", "overall"])].iterrows():
            table.setdefault(r.group, {})[r.method] = r.tau
    _bars(ax, table, "tau (tokens / target forward)", "tau by category")
    return _save(fig, out)


def plot_speedup(res: Results, out=None):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    df = res.summary
    if len(df):
        o = df[df.scope == "overall"]
        lo = (o.speedup - o.speedup_min).fillna(0).clip(lower=0)
        hi = (o.speedup_max - o.speedup).fillna(0).clip(lower=0)
        ax.bar(o.method, o.speedup, yerr=[lo, hi], capsize=4, color="tab:blue")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.tick_params(axis="x", rotation=30)
    base = res.raw_summary.get("baseline")
    ax.set(ylabel=f"speedup vs {base} (median, min-max over repeats)", title="Speedup by method")
    return _save(fig, out)


def plot_accept_histograms(res: Results, out=None):
    plt = pyplot()
    df = res.histogram
    methods = list(dict.fromkeys(df.method)) if len(df) else []
    methods = [m for m in methods if df[df.method == m].steps.sum() > 0]
    n = max(len(methods), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3), squeeze=False)
    for ax, m in zip(axes[0], methods):
        g = df[df.method == m]
        ax.bar(g.accepted, g.steps / g.steps.sum())
        ax.set(title=m, xlabel="drafts accepted per step", ylabel="share of steps")
    if not methods:
        axes[0][0].set_title("no speculative steps")
    fig.tight_layout()
    return _save(fig, out)


def plot_speedup_vs_tau(res: Results, out=None):
    """Measured tau against measured speedup: the gap to the diagonal is drafting + verify overhead."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    df = res.summary
    if len(df):
        o = df[df.scope == "overall"]
        ax.scatter(o.tau, o.speedup)
        for _, r in o.iterrows():
            ax.annotate(r.method, (r.tau, r.speedup), fontsize=8)
        top = max(float(o.tau.max()), float(o.speedup.max()), 1.0) * 1.1
        ax.plot([0, top], [0, top], "k:", lw=0.8, label="speedup = tau")
        ax.legend(fontsize=8)
    ax.set(xlabel="tau", ylabel="speedup", title="Speedup vs tau")
    return _save(fig, out)



def plot_sweep(sweep, out=None, title: str = "Throughput vs interactivity"):
    """Per method (and draft length) a curve over batch sizes: tokens/s per sequence (x) vs total
    tokens/s (y); the dashed line is the Pareto front over every point."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    if sweep is not None and len(sweep):
        for label, g in sweep.groupby("label", sort=False):
            g = g.sort_values("batch_size")
            ax.plot(g.tokens_per_s_per_seq, g.tokens_per_s_total, marker="o", label=label)
            for _, r in g.iterrows():
                ax.annotate(f"b{int(r.batch_size)}", (r.tokens_per_s_per_seq, r.tokens_per_s_total), fontsize=7)
        pts = list(zip(sweep.tokens_per_s_per_seq, sweep.tokens_per_s_total))
        front = pareto_front(pts)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, label="Pareto front")
        ax.legend(fontsize=8)
    ax.set(xlabel="tokens/s per sequence (interactivity)", ylabel="total tokens/s (throughput)", title=title)
    return _save(fig, out)


def plot_costmodel(res: Results, out=None):
    """Left: verify cost vs tokens verified. Right: predicted vs measured speedup."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    if res.verify_cost is not None and len(res.verify_cost):
        v = res.verify_cost
        a.plot(v.tokens, v.ms, marker="o")
        a.set(xscale="log", xlabel="tokens verified in one forward", ylabel="ms (median)",
              title="Target forward cost")
    if res.costmodel is not None and {"predicted_speedup", "measured_speedup"} <= set(res.costmodel.columns):
        c = res.costmodel
        x = range(len(c))
        b.bar([i - 0.2 for i in x], c.predicted_speedup, 0.4, label="predicted")
        b.bar([i + 0.2 for i in x], c.measured_speedup, 0.4, label="measured")
        b.set_xticks(list(x), c.method, rotation=30, ha="right")
        b.axhline(1.0, color="k", lw=0.8, ls="--")
        b.set(ylabel="speedup", title="Cost model: predicted vs measured")
        b.legend()
    return _save(fig, out)


BENCH_PLOTS = {
    "acceptance_by_position.png": plot_acceptance_by_position,
    "tau_by_category.png": plot_tau_by_category,
    "speedup.png": plot_speedup,
    "accept_hist.png": plot_accept_histograms,
    "speedup_vs_tau.png": plot_speedup_vs_tau,
}


def write_plots(path: str | Path) -> list[str]:
    """Draw every plot the folder has data for; returns the file names written."""
    plt = pyplot()
    res = load(path)
    written = []
    if len(res.summary):
        for name, fn in BENCH_PLOTS.items():
            plt.close(fn(res, Path(path) / name))
            written.append(name)
    if res.costmodel is not None:
        plt.close(plot_costmodel(res, Path(path) / "costmodel.png"))
        written.append("costmodel.png")
    if res.sweep is not None:
        plt.close(plot_sweep(res.sweep, Path(path) / "sweep.png"))
        written.append("sweep.png")
    return written
