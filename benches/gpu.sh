#!/bin/bash
# Everything issue 16 measures on a card, in one prepared run on a lent GPU machine (the device
# tool; about 15 minutes of card time per session, start-up included, so this aims at ~8):
#   1. the GPU check: CPU against CUDA, same weights and batch, loss and every gradient in f32,
#      ViT and ResNet towers with the text tower and both losses (tests/gpu.rs);
#   2. configs/tiny.toml on the synthetic set, f32 then bf16: val R@1 within 0.02 of each other;
#   3. training steps, vlp (`bench train`) then OpenCLIP (benches/peers/openclip_bench.py), both
#      bf16 mixed precision, at ViT-B/32 shapes (batch 256), tiny.toml shapes and RN50 (OpenCLIP's
#      ModifiedResNet on both sides),
#      with each process's peak card memory (nvidia-smi, polled);
#   4. corpus embedding, ViT-B/32, batch 1024: vlp `bench embed` then open_clip's inference;
#   5. issue 19's check: one card through the data-parallel code (`--devices cuda:0`) against the
#      plain path (`--device cuda`), tiny.toml, 300 steps each, twice in turn (goal: ≤ 5 % slower).
#
# Here, before the call (the card's machine has no compiler and no internet):
#   cargo build --release --features cuda && mkdir -p .gpu && strip -o .gpu/vlp target/release/vlp
#   strip -o .gpu/gpu-test $(cargo test --release --features cuda --test gpu --no-run 2>&1 | grep -o 'target/release/deps/gpu-[0-9a-f]*' | head -1)
#   python3 -m pip download --no-deps -d .gpu/whl open_clip_torch==3.3.0 ftfy wcwidth
# and carry `.gpu` (binaries and wheels; torch is on the machine). On the device:
#   bash benches/gpu.sh [STEPS]        (STEPS: timed training steps per benchmark, default 12)
# Prints the card, then each part's RESULT / val lines; BENCHMARKS.md records them.
set -uo pipefail
STEPS=${1:-12}
out=${OUT:-/tmp/vlp-gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
for d in $(find / -xdev \( -name 'libnvrtc.so*' -o -name 'libcuda.so*' \) 2>/dev/null | xargs -r -n1 dirname | sort -u); do
  export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done

# Runs "$@" and then prints the card's peak used memory above its level before the start.
used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }
peak() {
  local base max m pid rc
  base=$(used); max=$base
  "$@" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    m=$(used); [ "$m" -gt "$max" ] && max=$m
    sleep 0.2
  done
  wait "$pid"; rc=$?
  echo "PEAK_GPU_MIB $((max - base)) rc=$rc"
}

echo "== 1. GPU check: CPU against CUDA"
timeout 180 .gpu/gpu-test --ignored --test-threads 1 --nocapture 2>&1 | grep -E "parity|test |result|panicked"

echo "== 2. tiny.toml on the synthetic set, f32 then bf16"
.gpu/vlp data build synthetic --out "$out/synthetic" >/dev/null 2>&1
for p in f32 bf16; do
  timeout 300 .gpu/vlp train --config configs/tiny.toml --train "$out/synthetic" --val "$out/synthetic" \
    --out "$out/tiny-$p" --device cuda --precision "$p" 2>&1 | grep -E "trained|^val|error"
done

python3 -m pip install -q --no-index --no-deps --target "$out/site" .gpu/whl/*.whl && export PYTHONPATH="$out/site"
echo "== 3. training steps, bf16 mixed precision: vlp, then OpenCLIP amp_bf16"
for shapes in "vit-b-32 --model ViT-B-32 256" "tiny --config benches/openclip/tiny.json 256" "rn50 --model RN50 256"; do
  set -- $shapes
  peak timeout 240 .gpu/vlp bench train --config "configs/$1.toml" --device cuda --precision bf16 --batch "$4" --steps "$STEPS" 2>&1 | grep -E "RESULT|error|PEAK"
  peak timeout 240 python3 benches/peers/openclip_bench.py "$2" "$3" --batch "$4" --steps "$STEPS" --precision amp_bf16 --device cuda 2>&1 | grep -E "RESULT|Error|PEAK"
done

echo "== 4. corpus embedding, ViT-B/32, batch 1024: vlp, then open_clip"
timeout 240 .gpu/vlp train --config configs/vit-b-32.toml --train "$out/synthetic" --out "$out/vit-b-32" --steps 2 \
  --batch-size 64 --device cuda --set train.val_every=0 2>&1 | grep -E "trained|error"
peak timeout 240 .gpu/vlp bench embed --checkpoint "$out/vit-b-32" --batch 1024 --batches 8 --device cuda 2>&1 | grep -E "RESULT|error|PEAK"
peak timeout 240 python3 benches/openclip/embed_bench.py --model ViT-B-32 --device cuda --batch 1024 --batches 8 2>&1 | grep -E "RESULT|Error|PEAK"

echo "== 5. one card through the data-parallel code against the plain path (tiny.toml, 300 steps)"
for round in 1 2; do
  for how in "--device cuda" "--devices cuda:0"; do
    rm -rf "$out/dp"
    /usr/bin/time -f "WALL_S %e ($how, round $round)" timeout 240 .gpu/vlp train --config configs/tiny.toml --train "$out/synthetic" \
      --out "$out/dp" $how --steps 300 2>&1 | grep -E "trained|WALL_S|error"
  done
done
