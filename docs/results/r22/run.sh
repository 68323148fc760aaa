#!/bin/bash
# Round 22's A/B: does a loss on the acceptance itself (loss.tv_weight: the total variation
# 1 - sum_x min(p, q) to the target at T=1, DistillSpec's TVD) beside the recipe's CE + KL raise the
# quick preset's Hydra head's held-out acceptance at T=1, and what does it cost at T=0? On the data a
# `make demo` left (RUNS, default runs/demo), judged on round 21's held-out set: the 118 built-in
# prompts the preset leaves out, answered greedily (T=0) and sampled at T=1.
# From the project root:  bash docs/results/r22/run.sh [RUNS] ; python docs/results/r22/collect.py
set -euo pipefail
RUNS=${1:-runs/demo}
OUT=${OUT:-runs/r22}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
CFG=$RUNS/configs/hydra.yaml
GEN="--batch-size 32 --max-new-tokens 128 --dtype bf16 --on-long-prompt skip --no-progress"
distill() {  # out, then train.distill arguments; skipped when done
  local out=$1; shift
  [ -f "$out/meta.json" ] && ls "$out"/shard-*.jsonl >/dev/null 2>&1 || $PY -m train.distill --model smollm2-135m --out "$out" $GEN "$@"
}
# 1. held-out: the left-out prompts (round 20's split) answered greedily and at T=1 (as round 21)
[ -f "$OUT/heldout-prompts.jsonl" ] || $PY docs/results/r20/heldout.py "$OUT/heldout-prompts.jsonl"
distill "$OUT/heldout" --prompts "$OUT/heldout-prompts.jsonl"
distill "$OUT/heldout-t1" --prompts "$OUT/heldout-prompts.jsonl" --temperature 1.0 --seed 0
# 2. arms: name, then overrides ("demo" is the demo's own head: CE + KL, no TV, 400 steps)
arm() {
  local name=$1; shift
  if [ "$name" != demo ]; then
    [ -f "$RUNS/$name/final.json" ] || \
      $PY -m train.heads --config "$CFG" name="$name" log.progress=false "$@" --resume > "$OUT/$name.train.log" 2>&1
  fi
  local run=$([ "$name" = demo ] && echo hydra || echo "$name")
  $PY -m train.heads --config "$CFG" name="$run" "$@" data.eval="$OUT/heldout" log.progress=false --eval-only \
    | tail -1 > "$OUT/$name.heldout.json"
  $PY -m train.heads --config "$CFG" name="$run" "$@" data.eval="$OUT/heldout-t1" eval.temperature=1.0 \
    log.progress=false --eval-only | tail -1 > "$OUT/$name.heldout-t1.json"
}
for a in ${ARMS:-demo tv1 tv4 tv-only}; do  # ARMS="demo tv1": some of them
  case $a in
    demo) arm demo ;;
    tv1) arm tv1 loss.tv_weight=1.0 ;;
    tv4) arm tv4 loss.tv_weight=4.0 ;;
    tv-only) arm tv-only loss.ce_weight=0 loss.kl_weight=0 loss.tv_weight=1.0 ;;
    *) echo "unknown arm $a" >&2; exit 2 ;;
  esac
done
