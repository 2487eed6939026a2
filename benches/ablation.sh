#!/usr/bin/env bash
# BriVL's and Wukong's options against the global loss alone, same shapes, data, steps and seed:
# global · global + queue · global + token · global + reduced token · all together. Every variant
# is the base config with `--set` overrides (so the shapes are the same by construction), trained,
# evaluated on the test split and scored zero-shot; then each is compared with the global
# baseline by `vlp trec-eval --compare` (paired randomization test), per direction.
#
#   benches/ablation.sh DATA LABEL_FIELD [SEED] [BASE_CONFIG] [REDUCED_TOKENS] [STEPS]
# e.g. benches/ablation.sh data/synthetic main 0                          (configs/tiny.toml, T = 4)
#      benches/ablation.sh data/emoji category 1 configs/emoji.toml 9 700
# The synthetic variants equal the committed configs: brivl-tiny.toml (queue), tiny-filip.toml
# (token), wukong-tiny.toml (reduced token). Environment: VLP (default target/release/vlp).
# Writes runs/abl-TAG-VARIANT-sSEED and eval/abl-TAG-VARIANT-sSEED (TAG: the data directory's
# name); finished runs are reused. Prints one line per variant with wall and CPU (user + sys)
# seconds and peak RSS: the CPU time is the figure to compare when the machine was not quiet.
set -euo pipefail
DATA=$1 FIELD=$2 SEED=${3:-0} BASE=${4:-configs/tiny.toml} TOKENS=${5:-4} STEPS=${6:-}
VLP=${VLP:-target/release/vlp}
TAG=$(basename "$DATA")
QUEUE=(--set loss.queue_weight=1 --set loss.momentum.momentum=0.99 --set loss.momentum.queue_size=2048
       --set loss.momentum.temperature=0.07)
TOKEN=(--set loss.token_weight=1)
REDUCED=("${TOKEN[@]}" --set "model.image.token_reduction={tokens=$TOKENS,groups=8}")
declare -A SETS=([global]="" [queue]="${QUEUE[*]}" [token]="${TOKEN[*]}" [reduced]="${REDUCED[*]}"
                 [all]="${REDUCED[*]} ${QUEUE[*]}")
STEPS_SET=(); [ -n "$STEPS" ] && STEPS_SET=(--set "train.steps=$STEPS" --set "train.checkpoint_every=$((STEPS / 2))"
                                            --set "train.val_every=$((STEPS / 2))")
name() { echo "abl-$TAG-$1-s$SEED"; }
for v in global queue token reduced all; do
  run=runs/$(name $v)
  # shellcheck disable=SC2206  # the overrides hold no spaces inside one argument
  sets=(${SETS[$v]})
  if [ ! -f "$run/latest" ]; then
    /usr/bin/time -f "$v: wall %e s, cpu %U + %S s, peak RSS %M KiB" "$VLP" train --config "$BASE" --train "$DATA" \
      --val "$DATA" --out "$run" --set train.seed="$SEED" "${STEPS_SET[@]}" "${sets[@]}" 2>&1 | grep -v "^step" | tail -4
  fi
  "$VLP" eval --checkpoint "$run" --data "$DATA" --split test --out "eval/$(name $v)" >/dev/null 2>&1
  grep "| $(name $v) | all" "eval/$(name $v)/table.md"
  "$VLP" zeroshot --checkpoint "$run" --data "$DATA" --label-field "$FIELD" 2>&1 | grep -iE "global|token" | head -2
done
for v in queue token reduced all; do
  for d in t2i i2t; do
    echo "== $v against global, $d"
    "$VLP" trec-eval "$DATA/test.$d.qrels" "eval/$(name global)/$(name global).test.$d.run" -m ndcg_cut.5,10,20 -m map \
      --compare "eval/$(name $v)/$(name $v).test.$d.run" | tail -4
  done
done
