#!/usr/bin/env bash
# The GPU check for a lent accelerator (device tool): correctness against the CPU, then bf16 timings of
# vil_small (chunkwise, parallel, mlstm_kernels' Triton kernel if importable) and ViT-S/16 at 512-2048.
# Installs nothing: needs torch with CUDA and timm (segmentation_models_pytorch is optional for the trunk).
#   device run:  bash benchmarks/gpu.sh 2>&1 | tee $OUT/gpu.md
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONPATH=. PYTHONUNBUFFERED=1 python3 benchmarks/gpu.py "$@"
