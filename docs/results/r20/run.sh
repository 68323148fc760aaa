#!/bin/bash
# Round 20's A/B of training levers for the quick preset's hydra head, on the data and hidden-state
# cache a `make demo` left (RUNS, default runs/demo), judged on prompts the preset leaves out.
# From the project root:  bash docs/results/r20/run.sh [RUNS] ; python docs/results/r20/collect.py
set -euo pipefail
RUNS=${1:-runs/demo}
OUT=${OUT:-runs/r20}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
CFG=$RUNS/configs/hydra.yaml
# 1. held-out: greedy answers to the 118 left-out built-in prompts, as the demo distils its own
[ -f "$OUT/heldout-prompts.jsonl" ] || $PY docs/results/r20/heldout.py "$OUT/heldout-prompts.jsonl"
[ -f "$OUT/heldout/meta.json" ] && ls "$OUT"/heldout/shard-*.jsonl >/dev/null 2>&1 || \
  $PY -m train.distill --model smollm2-135m --prompts "$OUT/heldout-prompts.jsonl" --out "$OUT/heldout" \
    --batch-size 32 --max-new-tokens 128 --dtype bf16 --on-long-prompt skip --no-progress
# 2. arms: name steps lr extra-overrides ("demo" is the demo's own head, not retrained)
arm() {
  local name=$1; shift
  if [ "$name" != demo ]; then
    [ -f "$RUNS/$name/final.json" ] || \
      $PY -m train.heads --config "$CFG" name="$name" log.progress=false "$@" --resume > "$OUT/$name.train.log" 2>&1
  fi
  local run=$([ "$name" = demo ] && echo hydra || echo "$name")
  $PY -m train.heads --config "$CFG" name="$run" "$@" data.eval="$OUT/heldout" log.progress=false --eval-only \
    | tail -1 > "$OUT/$name.heldout.json"
}
arm demo
arm ab-220-lr1e-3 optim.max_steps=220 optim.lr=1e-3 eval.every=110
arm ab-400-lr1e-3 optim.max_steps=400 optim.lr=1e-3 eval.every=200
arm ab-400-noise0.3 data.feature_noise=0.3
arm ab-400-wd0.1 optim.weight_decay=0.1
# 3. how far steps go on: the demo's lr for longer
arm ab-600-lr2e-3 optim.max_steps=600 eval.every=200
arm ab-800-lr2e-3 optim.max_steps=800 eval.every=200
# 4. regularization where the head is short of data: 800 steps with feature noise
arm ab-800-noise0.3 optim.max_steps=800 eval.every=200 data.feature_noise=0.3
