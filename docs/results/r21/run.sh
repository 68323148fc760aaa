#!/bin/bash
# Round 21's A/B: does the target's *sampled* (T=1) answers as training data help the quick
# preset's Hydra head, at T=1 and at T=0? On the data a `make demo` left (RUNS, default runs/demo),
# judged on the 118 built-in prompts the preset leaves out, answered greedily (held-out T=0) and
# sampled at T=1 (held-out T=1; expected acceptance there is sum_x min(p, q) per position).
# From the project root:  bash docs/results/r21/run.sh [RUNS] ; python docs/results/r21/collect.py
set -euo pipefail
RUNS=${1:-runs/demo}
OUT=${OUT:-runs/r21}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
CFG=$RUNS/configs/hydra.yaml
D=$RUNS/data
GEN="--batch-size 32 --max-new-tokens 128 --dtype bf16 --on-long-prompt skip --no-progress"
distill() {  # out, then train.distill arguments; skipped when done
  local out=$1; shift
  [ -f "$out/meta.json" ] && ls "$out"/shard-*.jsonl >/dev/null 2>&1 || $PY -m train.distill --model smollm2-135m --out "$out" $GEN "$@"
}
# 1. held-out: the left-out prompts (round 20's split) answered greedily and at T=1
[ -f "$OUT/heldout-prompts.jsonl" ] || $PY docs/results/r20/heldout.py "$OUT/heldout-prompts.jsonl"
distill "$OUT/heldout" --prompts "$OUT/heldout-prompts.jsonl"
distill "$OUT/heldout-t1" --prompts "$OUT/heldout-prompts.jsonl" --temperature 1.0 --seed 0
# 2. the demo's own prompts (the same 320 built-in ones: the shuffle's seed stays 0, and its passage
#    tasks) answered again, sampled at T=1
distill "$D/distill-t1" --prompts builtin --shuffle --num-prompts 320 --temperature 1.0 --seed 0
distill "$D/distill-passages-t1" --prompts "$D/passages.jsonl" --temperature 1.0 --seed 0
GREEDY="$D/distill,$D/distill-passages"
MIX="$GREEDY,$D/distill-t1,$D/distill-passages-t1"
[ -f "$OUT/cache-mix/meta.json" ] || $PY -m train.cache --config "$CFG" --out "$OUT/cache-mix" data.train="$MIX"
# 3. arms: name, then overrides ("demo" is the demo's own head: greedy data, 400 steps)
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
for a in ${ARMS:-demo mix-400 mix-800 greedy-800}; do  # ARMS="demo mix-400": some of them
  case $a in
    demo) arm demo ;;
    mix-400) arm mix-400 data.train="$MIX" data.cache="$OUT/cache-mix" ;;
    mix-800) arm mix-800 data.train="$MIX" data.cache="$OUT/cache-mix" optim.max_steps=800 ;;
    greedy-800) arm greedy-800 optim.max_steps=800 ;;
    *) echo "unknown arm $a" >&2; exit 2 ;;
  esac
done
