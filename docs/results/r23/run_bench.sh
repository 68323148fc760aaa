#!/bin/bash
# Round 23's T=1 benchmark (spec suite, 24 prompts, seed 2, one repeat, methods interleaved): the
# adaptive union over the head's sampled chain (what `make demo` runs at T>0) with the demo's own
# Hydra head (greedy answers, 400 steps) and with the head trained on greedy + sampled answers for
# 1,600 steps (docs/results/r23/run.sh), that head's chain alone, and lookup.
# From the project root, after run.sh:  bash docs/results/r23/run_bench.sh [RUNS]
set -euo pipefail
RUNS=${1:-runs/demo}
PY=${PY:-.venv/bin/python}
D=$RUNS/hydra/best
X=$RUNS/mix-1600/best
M="hf,vanilla,pld,adapt+demo=adapt+heads:$D:auto,adapt+mix1600=adapt+heads:$X:auto,mix1600=heads:$X:auto"
$PY -m eval.bench --model smollm2-135m --dtype bf16 --suite spec --temperature 1 --max-new-tokens 128 --repeats 1 \
  --num-prompts 24 --seed 2 --methods "$M" --out results/r23-t1/t1
