#!/usr/bin/env bash
# HNSW beside hnswlib on the same vectors and ground truth (BENCHMARKS.md, "HNSW against hnswlib").
#   benches/ann.sh DIR N        # N = 100000 or 1000000; vectors, queries and gt are made once in DIR
# Writes DIR/hnswlib.log (+ .json) and DIR/vlp.log. Run on a quiet machine: builds use 2 threads,
# queries 1.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1
n=$2
py=${PYTHON:-.venv/bin/python}
mkdir -p "$dir"
if [ ! -f "$dir/gt.npy" ]; then
  $py benches/peers/ann_bench.py --synthetic "$n" 256 1000 --data-dir "$dir" --libs "" --no-brute --json "$dir/gen.json"
fi
cargo build --release
$py benches/peers/ann_bench.py --npy-base "$dir/base.npy" --npy-query "$dir/query.npy" --data-dir "$dir" --reuse-gt \
  --libs hnswlib --build-threads 2 --no-brute --retries 0 --json "$dir/hnswlib.json" > "$dir/hnswlib.log" 2>&1
/usr/bin/time -v target/release/vlp index bench --base "$dir/base.npy" --queries "$dir/query.npy" --gt "$dir/gt.npy" --threads 2 > "$dir/vlp.log" 2>&1
tail -12 "$dir/hnswlib.log"
grep '^{' "$dir/vlp.log"
