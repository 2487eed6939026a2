#!/usr/bin/env bash
# vlp and OpenCLIP trained on one data set with one recipe (the vlp config's model shapes,
# batch, steps, learning rate, schedule, weight decay, clipping, crop and tokenizer), for each
# seed, then the test split of both scored and compared by `vlp trec-eval --compare` (paired
# randomization test), per direction.
#
#   benches/emoji_vs_openclip.sh CONFIG DATA NAME [--set KEY=VALUE ...]
# e.g. benches/emoji_vs_openclip.sh configs/emoji.toml data/emoji emoji
# Environment: SEEDS (default "0 1 2"), PY (default .venv/bin/python3, with torch, torchvision,
# open_clip_torch==3.3.0 and tokenizers), VLP (default target/release/vlp).
# Writes runs/NAME-sS (vlp), runs/openclip-NAME-sS (OpenCLIP), eval/NAME-sS, and prints the
# measures of both and the p-values; finished runs are reused.
set -euo pipefail
CONFIG=$1 DATA=$2 NAME=$3
shift 3
SEEDS=${SEEDS:-"0 1 2"}
PY=${PY:-.venv/bin/python3}
VLP=${VLP:-target/release/vlp}
for s in $SEEDS; do
  run=runs/$NAME-s$s peer=runs/openclip-$NAME-s$s
  if [ ! -f "$run/latest" ]; then
    /usr/bin/time -f "vlp seed $s: %e s, peak RSS %M KiB" \
      "$VLP" train --config "$CONFIG" --train "$DATA" --val "$DATA" --out "$run" --set train.seed="$s" "$@" 2>&1 | grep -v "^step\|baseline" | tail -3
  fi
  "$VLP" eval --checkpoint "$run" --data "$DATA" --split test --out "eval/$NAME-s$s" >/dev/null 2>&1
  if [ ! -f "$peer/test.t2i.run" ]; then
    /usr/bin/time -f "openclip seed $s: %e s, peak RSS %M KiB" "$PY" benches/openclip/train_vlp_data.py --data "$DATA" --run "$run" --out "$peer" --seed "$s"
  fi
  for d in t2i i2t; do
    echo "== seed $s $d: OpenCLIP (A) against vlp (B)"
    "$VLP" trec-eval "$DATA/test.$d.qrels" "$peer/test.$d.run" -m ndcg_cut.5,10,20 -m map \
      --compare "eval/$NAME-s$s/$NAME-s$s.test.$d.run"
  done
done
