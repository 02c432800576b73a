#!/usr/bin/env bash
# GPU check for a machine with one NVIDIA GPU: images/s of ModResNet18 and ResNet50 (cifar stem,
# 40x40, batch 256) with our path and the report-style path, and peak GPU memory. It installs
# nothing: torch and torchvision must be importable by $PYTHON (default: python3, or the
# repository's .venv when it exists). Takes about 2-4 minutes; stops after 280 s at the latest.
#
#   bash benchmarks/gpu_check.sh [--images N] [--epochs N]
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU found (nvidia-smi is missing or lists none); run it on a GPU machine" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 280 "$PYTHON" benchmarks/gpu_check.py --device cuda "$@"
