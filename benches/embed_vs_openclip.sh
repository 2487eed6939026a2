#!/usr/bin/env bash
# Embedding throughput of one model's weights in vlp and in OpenCLIP (PyTorch, CPU), alternating
# A B A B on the same machine, and the import's time and peak memory.
#
#   benches/embed_vs_openclip.sh FIXTURE [--batch 32] [--batches 8]
# FIXTURE: a directory written by benches/openclip/import_fixture.py (config.json,
# weights.safetensors), e.g. `import_fixture.py --config ViT-B-32 --dtype f32 --out /tmp/vitb32`.
# Environment: VLP (default target/release/vlp), PY (default .venv/bin/python3), ROUNDS (2).
set -euo pipefail
FIX=$1
shift
VLP=${VLP:-target/release/vlp}
PY=${PY:-.venv/bin/python3}
RUN=${RUN:-runs/embed-bench-$(basename "$FIX")}
if [ ! -f "$RUN/latest" ]; then
  /usr/bin/time -f "import: %e s wall, peak RSS %M KiB" "$VLP" import openclip --config "$FIX/config.json" \
    --weights "$FIX/weights.safetensors" --bpe tests/fixtures/openclip-bpe/bpe_simple_vocab_16e6.txt.gz --out "$RUN"
fi
for round in $(seq "${ROUNDS:-2}"); do
  echo "round $round vlp:      $("$VLP" bench embed --checkpoint "$RUN" "$@" | grep RESULT)"
  echo "round $round openclip: $("$PY" benches/openclip/embed_bench.py "$FIX" "$@" | grep RESULT)"
done
