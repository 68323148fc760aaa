"""Thin command-line scripts over the `mtp` library: `python -m eval.bench`, `eval.costmodel`,
`eval.acceptance`, `eval.sweep`.

OpenMP threads that spin while waiting make multi-token forwards (verification) hundreds of times
slower when the cores are oversubscribed (measured on a shared 2-core machine: 500 ms instead of
2 ms for a 4-token forward of a tiny model), which would bias every speculative benchmark. The
scripts therefore default to passive waiting; set OMP_WAIT_POLICY yourself to override. It must be
set before torch is imported, hence here.

Passive waiting costs absolute speed on a quiet machine, not ratios (round 23,
`docs/results/r23-omp`: smollm2-135m, bf16, 2 cores, 12 prompts, two runs each): HF `generate` ran at
16-17 tok/s under PASSIVE, 20-21 under OpenMP's default and 25-27 under ACTIVE, while every
method's speedup over it stayed within the run-to-run spread (lookup 1.64-1.84x, the adaptive union
1.69-1.87x under all three). Compare tokens/s across runs only under one policy (report.md's header
names it); `OMP_WAIT_POLICY=ACTIVE` gives a dedicated machine's absolute throughput.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
