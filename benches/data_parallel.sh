#!/usr/bin/env bash
# Data-parallel training on this machine: 2 CPU replicas of 1 thread each (`--devices cpu:2`)
# and 2 processes over loopback (`--nodes 2`, 1 thread each) against 1 device with the machine's
# 2 threads, same config, data, steps and seed; A B A B pairs by farm-bench. Then the time each
# replica spent in collective calls per step, and the steady-state step time (from step 5 on), from
# the last run of each kind's log (samples/s = steps × batch / seconds).
#
#   benches/data_parallel.sh [CONFIG] [DATA] [STEPS]      (defaults: configs/tiny.toml data/synthetic 100)
# Environment: VLP (default target/release/vlp), RUNS (default 3).
set -euo pipefail
CONFIG=${1:-configs/tiny.toml} DATA=${2:-data/synthetic} STEPS=${3:-100}
VLP=$(realpath "${VLP:-target/release/vlp}") RUNS=${RUNS:-3}
tmp=$(mktemp -d)
trap 'pkill -f "vlp coordinator --port $port" 2>/dev/null || true; rm -rf "$tmp"' EXIT
train="$VLP train --config $CONFIG --train $DATA --steps $STEPS --set train.val_every=0 --set train.checkpoint_every=$STEPS"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VLP" coordinator --port "$port" >"$tmp/coordinator.log" 2>&1 &
sleep 1
cat >"$tmp/nodes.sh" <<NODES
#!/usr/bin/env bash
set -e
rm -rf $tmp/nodes
for r in 1 0; do
  $train --out $tmp/nodes --threads-per-device 1 --nodes 2 --node-rank \$r --coordinator 127.0.0.1:$port \\
    --node-address 127.0.0.1:\$((port + 1 + r)) --collective-timeout-s 120 >>$tmp/nodes.\$r.log 2>&1 &
done
wait
cp $tmp/nodes/train_log.jsonl $tmp/nodes.jsonl
NODES
chmod +x "$tmp/nodes.sh"
echo "== 2 devices x 1 thread (A) against 1 device x 2 threads (B)"
farm-bench -n "$RUNS" --timeout 3000 \
  --vs "sh -c 'rm -rf $tmp/one && $train --out $tmp/one && cp $tmp/one/train_log.jsonl $tmp/one.jsonl'" \
  -- sh -c "rm -rf $tmp/two && $train --out $tmp/two --devices cpu:2 && cp $tmp/two/train_log.jsonl $tmp/two.jsonl"
echo "== 2 processes over loopback x 1 thread (A) against 1 device x 2 threads (B)"
farm-bench -n "$RUNS" --timeout 3000 \
  --vs "sh -c 'rm -rf $tmp/one && exec $train --out $tmp/one'" \
  -- "$tmp/nodes.sh"
for run in one two nodes; do
  python3 - "$tmp/$run.jsonl" "$run" <<'PY'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1])]
# steady state: from step 5 on (the first steps include registration and the first batches)
span = steps[-1]["elapsed_s"] - steps[4]["elapsed_s"]
line = f"{sys.argv[2]}: {len(steps) - 5} steps in {span:.2f} s"
if "collective_s" in steps[-1]:
    c = sorted(s["collective_s"] for s in steps[5:])
    line += f"; collective calls per step (rank 0): median {1e3 * c[len(c) // 2]:.1f} ms, mean {1e3 * sum(c) / len(c):.1f} ms"
print(line)
PY
done
