"""The results table over runs (folders of eval.bench folders t0, t1, ...), from their summaries.

    python -m eval.report results/demo [results/demo-gemma ...] [--readme README.md] [--docs docs/results]
Prints the markdown table. --readme replaces the table between the README's results-table markers;
--docs copies the small files behind it (summary.json/csv, report.md, png, and a demo's own report.md; also the run's sweep*
folders from eval.sweep) into that folder, with the per-position acceptance plot (`--plot`).
`make report` runs it twice: the headline runs into README.md, every run into docs/results/README.md.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders (each holding t0/, t1/ ... eval.bench folders)")
    ap.add_argument("--readme", default=None, help="README to update between the results-table markers")
    ap.add_argument("--docs", default=None, help="copy the small files behind the table here")
    ap.add_argument("--plot", default="acceptance.png",
                    help="with --docs: file name, inside --docs, of the per-position acceptance plot (one panel "
                         "per run); 'none' for no plot")
    a = ap.parse_args(argv)

    from mtp.report import plot_positions, reproduce_lines, splice_readme, tables, temperature_folders

    missing = [r for r in a.runs if not temperature_folders(r)]
    if missing:
        print(f"error: {missing} hold no eval.bench folders (t0/, t1/ ... with summary.json); run "
              "`python -m train.demo` or eval.bench first", file=sys.stderr)
        return 2
    table = tables(a.runs) + "\nMachine and command behind each number:\n\n" + "\n".join(reproduce_lines(a.runs)) + "\n"
    print(table)
    if a.docs:
        docs = Path(a.docs)
        for run in a.runs:
            folders = list(temperature_folders(run).values()) + sorted(Path(run).glob("sweep*"))
            for p in folders:  # the benchmark folders, and throughput-vs-interactivity sweeps beside them
                dst = docs / Path(run).name / p.name
                dst.mkdir(parents=True, exist_ok=True)
                for f in list(p.glob("*.json")) + list(p.glob("*.csv")) + list(p.glob("*.png")) + list(p.glob("*.md")):
                    shutil.copy2(f, dst / f.name)
            top = list(Path(run).glob("*.md")) + list(Path(run).glob("*.png"))  # a demo's report.md and plot
            if top:
                (docs / Path(run).name).mkdir(parents=True, exist_ok=True)
            for f in top:
                shutil.copy2(f, docs / Path(run).name / f.name)
        docs.mkdir(parents=True, exist_ok=True)
        if a.plot.lower() != "none":
            plot_positions(a.runs, docs / a.plot)
    if a.readme:
        try:
            splice_readme(a.readme, table)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
