#!/bin/bash
# Round 23: does OpenMP's wait policy change the kit's speedups? eval.* scripts default to
# OMP_WAIT_POLICY=PASSIVE (eval/__init__.py: spinning threads made forwards hundreds of times slower
# when the 2 cores were oversubscribed). On a quiet machine PASSIVE makes every forward slower
# (threads sleep after each parallel region and are woken for the next). The same T=0 benchmark of
# the demo's head, alternately under PASSIVE, ACTIVE and OpenMP's default, two runs each, nothing else running.
# From the project root, after `make demo`:  bash docs/results/r23/omp.sh [RUNS]
set -euo pipefail
RUNS=${1:-runs/demo}
PY=${PY:-.venv/bin/python}
H=$RUNS/hydra/best
M="hf,vanilla,pld,hydra=heads:$H:auto,adapt+hydra=adapt+heads:$H:3:tree16"
# DEFAULT: OpenMP's own default (libgomp: spin a while, then sleep), what a torch user gets; the
# empty value makes libgomp warn once and keep its default (eval/__init__ only fills an unset one)
for run in 1 2; do
  for policy in ${POLICIES:-PASSIVE ACTIVE DEFAULT}; do
    out=results/r23-omp/$policy-$run
    val=$([ "$policy" = DEFAULT ] && echo "" || echo "$policy")
    [ -f "$out/t0/summary.json" ] || OMP_WAIT_POLICY=$val $PY -m eval.bench --model smollm2-135m --dtype bf16 \
      --suite spec --temperature 0 --max-new-tokens 128 --repeats 1 --num-prompts 12 --methods "$M" --out "$out/t0"
  done
done
