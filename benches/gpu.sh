#!/bin/bash
# One prepared run on a lent GPU machine (see the device tool): vit-b-32.toml bf16 training steps
# with vlp, then OpenCLIP's amp_bf16 on the same shapes and batch, one after the other.
#
# Here, before the call:
#   cargo build --release --features cuda && strip -o .gpu/vlp target/release/vlp
#   .venv/bin/pip download --no-deps -d .gpu/whl open_clip_torch==3.3.0 ftfy wcwidth
# and carry `.gpu` (binary + wheels). On the device: bash benches/gpu.sh [BATCH] [STEPS]
# Prints the two RESULT lines that BENCHMARKS.md records.
set -uo pipefail
BATCH=${1:-256}
STEPS=${2:-12}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
for d in $(find / -xdev \( -name 'libnvrtc.so*' -o -name 'libcuda.so*' \) 2>/dev/null | xargs -r -n1 dirname | sort -u); do
  export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
timeout 240 .gpu/vlp bench train --config configs/vit-b-32.toml --device cuda --batch "$BATCH" --steps "$STEPS" 2>&1 | tail -5
python3 -m pip install -q --no-index --no-deps --target "$PWD/.site" .gpu/whl/*.whl && export PYTHONPATH="$PWD/.site"
timeout 240 python3 benches/peers/openclip_bench.py --model ViT-B-32 --batch "$BATCH" --steps "$STEPS" --precision amp_bf16 --device cuda 2>&1 | grep RESULT
