#!/usr/bin/env bash
# Gradient caching (`--grad-accum N`) against one pass, same config, data, global batch, steps and
# seed; A B A B pairs by farm-bench: wall time and peak RSS (the activations the encoders hold),
# and each run's final loss (the same up to float rounding).
#
#   benches/grad_accum.sh [CONFIG] [DATA] [BATCH] [N] [STEPS]   (defaults: configs/tiny.toml data/synthetic 512 8 10)
# Environment: VLP (default target/release/vlp), RUNS (default 3).
set -euo pipefail
CONFIG=${1:-configs/tiny.toml} DATA=${2:-data/synthetic} BATCH=${3:-512} N=${4:-8} STEPS=${5:-10}
VLP=$(realpath "${VLP:-target/release/vlp}") RUNS=${RUNS:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
train="$VLP train --config $CONFIG --train $DATA --steps $STEPS --batch-size $BATCH --set train.val_every=0 --set train.checkpoint_every=$STEPS"
echo "== --grad-accum $N (A) against one pass (B), global batch $BATCH"
farm-bench -n "$RUNS" --timeout 3000 \
  --vs "sh -c 'rm -rf $tmp/one && $train --out $tmp/one && cp $tmp/one/train_log.jsonl $tmp/one.jsonl'" \
  -- sh -c "rm -rf $tmp/parts && $train --out $tmp/parts --grad-accum $N && cp $tmp/parts/train_log.jsonl $tmp/parts.jsonl"
for run in one parts; do
  python3 - "$tmp/$run.jsonl" "$run" <<'PY'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1])]
print(f"{sys.argv[2]}: {len(steps)} steps, final loss {steps[-1]['loss']:.6f}, gradient norm {steps[-1]['grad_norm']:.6f}")
PY
done
