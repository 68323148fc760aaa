"""Thin command-line scripts over the `mtp` library: `python -m eval.bench`, `eval.costmodel`,
`eval.acceptance`, `eval.sweep`.

OpenMP threads that spin while waiting make multi-token forwards (verification) hundreds of times
slower when the cores are oversubscribed (measured on a shared 2-core machine: 500 ms instead of
2 ms for a 4-token forward of a tiny model), which would bias every speculative benchmark. The
scripts therefore default to passive waiting; set OMP_WAIT_POLICY yourself to override. It must be
set before torch is imported, hence here.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
