#!/bin/bash
# Round 22's T=1 benchmarks of the demo's Hydra head (spec suite, one repeat, methods interleaved):
# 1. results/r22-bench/t1 (18 prompts): the head's chain at the length `:auto` chooses from its held-out
#    acceptance of sampled decoding and at K=1; the adaptive union over the head's tree as it is and
#    with its head estimate averaged 4x more slowly (head_smoothing 0.05 against 0.2: bench_hs.py).
# 2. results/r22-chain/t1 (18 prompts) and results/r22-chain-s1/t1 (24 prompts, seed 1): the union over
#    the head's tree against the union over its sampled chain (adapt+heads:<dir>:auto).
# From the project root, after `make demo`:  bash docs/results/r22/run_bench.sh [RUNS]
set -euo pipefail
RUNS=${1:-runs/demo}
PY=${PY:-.venv/bin/python}
H=$RUNS/hydra/best
ARGS="--model smollm2-135m --dtype bf16 --suite spec --temperature 1 --max-new-tokens 128 --repeats 1"
M="hf,vanilla,pld,hydra=heads:$H:auto,hydra1=heads:$H:1"
M="$M,adapt+hydra=adapt+heads:$H:3:tree16,adapt+hydra-hs0.05=adapt+heads:$H:3:tree16"
PYTHONPATH=. $PY docs/results/r22/bench_hs.py $ARGS --num-prompts 18 --methods "$M" --out results/r22-bench/t1
M="hf,vanilla,hydra=heads:$H:auto,adapt+hydra=adapt+heads:$H:3:tree16,adapt+hydra-chain=adapt+heads:$H:auto"
$PY -m eval.bench $ARGS --num-prompts 18 --methods "$M" --out results/r22-chain/t1
$PY -m eval.bench $ARGS --num-prompts 24 --seed 1 --methods "$M" --out results/r22-chain-s1/t1
