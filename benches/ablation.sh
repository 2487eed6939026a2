#!/usr/bin/env bash
# BriVL's and Wukong's options against the global loss alone, same shapes, data, steps and seed:
# global · global + queue · global + token · global + reduced token · all together. Each variant
# is trained, evaluated on the test split and scored zero-shot; then each is compared with the
# global baseline by `vlp trec-eval --compare` (paired randomization test), per direction.
#
#   benches/ablation.sh DATA LABEL_FIELD [SEED]
# e.g. benches/ablation.sh data/synthetic main 0
# Environment: VLP (default target/release/vlp). Writes runs/abl-VARIANT-sSEED and
# eval/abl-VARIANT-sSEED; finished runs are reused.
set -euo pipefail
DATA=$1 FIELD=$2 SEED=${3:-0}
VLP=${VLP:-target/release/vlp}
declare -A CONFIG=([global]=configs/tiny.toml [queue]=configs/brivl-tiny.toml [token]=configs/tiny-filip.toml
                   [reduced]=configs/wukong-tiny.toml [all]=configs/wukong-tiny.toml)
ALL_SET=(--set loss.queue_weight=1 --set loss.momentum.queue_size=2048)
for v in global queue token reduced all; do
  run=runs/abl-$v-s$SEED
  extra=(); [ "$v" = all ] && extra=("${ALL_SET[@]}")
  if [ ! -f "$run/latest" ]; then
    /usr/bin/time -f "$v: %e s, peak RSS %M KiB" "$VLP" train --config "${CONFIG[$v]}" --train "$DATA" --val "$DATA" \
      --out "$run" --set train.seed="$SEED" "${extra[@]}" 2>&1 | grep -v "^step" | tail -4
  fi
  "$VLP" eval --checkpoint "$run" --data "$DATA" --split test --out "eval/abl-$v-s$SEED" >/dev/null 2>&1
  grep "| abl-$v-s$SEED | all" "eval/abl-$v-s$SEED/table.md"
  "$VLP" zeroshot --checkpoint "$run" --data "$DATA" --label-field "$FIELD" 2>&1 | grep -iE "global|token" | head -2
done
for v in queue token reduced all; do
  for d in t2i i2t; do
    echo "== $v against global, $d"
    "$VLP" trec-eval "$DATA/test.$d.qrels" "eval/abl-global-s$SEED/abl-global-s$SEED.test.$d.run" -m ndcg_cut.5,10,20 -m map \
      --compare "eval/abl-$v-s$SEED/abl-$v-s$SEED.test.$d.run" | tail -4
  done
done
