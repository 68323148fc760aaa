#!/bin/bash
# Round 23: the quick preset's Hydra recipe on greedy + sampled (T=1) answers, trained longer
# (1,600 steps: as many passes over the mixed data as 800 over the greedy alone), for the union
# at T=1. Data and held-out sets as round 21 (`docs/results/r21/run.sh`, which this calls first for
# them), judged on the same held-out answers (greedy and sampled at T=1).
# From the project root:  bash docs/results/r23/run.sh [RUNS]
set -euo pipefail
RUNS=${1:-runs/demo}
export OUT=${OUT:-runs/r22}
PY=${PY:-.venv/bin/python}
ARMS=demo bash docs/results/r21/run.sh "$RUNS"   # the sampled answers, the mixed cache, the held-out sets
CFG=$RUNS/configs/hydra.yaml
D=$RUNS/data
MIX="$D/distill,$D/distill-passages,$D/distill-t1,$D/distill-passages-t1"
name=mix-1600
[ -f "$RUNS/$name/final.json" ] || $PY -m train.heads --config "$CFG" name=$name data.train="$MIX" \
  data.cache="$OUT/cache-mix" optim.max_steps=1600 log.progress=false --resume > "$OUT/$name.train.log" 2>&1
$PY -m train.heads --config "$CFG" name=$name data.train="$MIX" data.cache="$OUT/cache-mix" \
  data.eval="$OUT/heldout" log.progress=false --eval-only | tail -1 > "$OUT/$name.heldout.json"
$PY -m train.heads --config "$CFG" name=$name data.train="$MIX" data.cache="$OUT/cache-mix" \
  data.eval="$OUT/heldout-t1" eval.temperature=1.0 log.progress=false --eval-only | tail -1 > "$OUT/$name.heldout-t1.json"
