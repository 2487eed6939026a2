#!/usr/bin/env bash
# The parity harness at full length: OpenCLIP (benches/openclip/parity.py) trains a model of the
# `tiny.toml` shapes for 100 steps and writes its initial weights, batches and losses; vlp then
# starts from those weights, takes the same 100 steps and prints every step's loss beside
# OpenCLIP's (`vlp bench parity`). BENCHMARKS.md records the RESULT lines.
#
#   benches/openclip_parity.sh [PYTHON] [VLP] [DIR]
# PYTHON needs torch, open_clip_torch==3.3.0, safetensors, numpy (default: .venv/bin/python3);
# VLP defaults to target/release/vlp. CI runs a 20-step version on the fixture committed under
# crates/vlp-train/tests/fixtures/openclip-parity (tests/openclip_parity.rs).
set -euo pipefail
PY=${1:-.venv/bin/python3}
VLP=${2:-target/release/vlp}
DIR=${3:-$(mktemp -d)}
"$PY" benches/openclip/parity.py --config benches/openclip/tiny.json --steps 100 --batch 32 --warmup 10 --out "$DIR" | tail -1
"$VLP" bench parity --fixture "$DIR" --json "$DIR/vlp-losses.json"
