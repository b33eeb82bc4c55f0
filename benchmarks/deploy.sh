#!/usr/bin/env bash
# The deployment table: quantize the reference bundle, prune it to 4 and 3 layers (each
# recovered by distillation, then quantized), and measure every variant side by side.
# Usage: benchmarks/deploy.sh [BUNDLE]   (default: the seed-13 run of benchmarks/snips.py)
set -euo pipefail
BUNDLE=${1:-runs/bench/finetuned-13/bundle}
voicenlu quantize "$BUNDLE"
for layers in 4 3; do
  if [ ! -f "runs/prune-$layers/bundle/model.onnx" ]; then
    voicenlu prune "$BUNDLE" --layers "$layers" --output-dir "runs/prune-$layers"
  fi
  voicenlu quantize "runs/prune-$layers/bundle"
done
voicenlu bench "$BUNDLE" --pruned runs/prune-4/bundle runs/prune-3/bundle --out benchmarks/deploy
