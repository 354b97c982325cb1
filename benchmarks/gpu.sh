#!/usr/bin/env bash
# GPU check, ready to run on a CUDA machine (≤ 8 minutes): the CUDA-marked tests, then the estimator
# and training hot paths timed on CPU and GPU with their CPU/GPU ratios (benchmarks/bench_gpu.py).
# Without CUDA it says so and exits 0.  PYTHON picks the interpreter (default: .venv/bin/python when
# present, else python3); it needs a CUDA build of torch.
#
#     bash benchmarks/gpu.sh
set -u
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "no CUDA: torch.cuda.is_available() is False for $PYTHON; skipping the GPU check"
    exit 0
fi
"$PYTHON" -c 'import torch; print("CUDA", torch.version.cuda, "|", torch.cuda.get_device_name(0))'
status=0
# Time limits add up to 8 minutes: 3 for the tests, 5 for the timings.
echo "== CUDA-marked tests (pytest -m gpu)"
timeout 180 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests || status=1
echo "== GPU vs CPU timings"
timeout 300 "$PYTHON" benchmarks/bench_gpu.py --device cuda || status=1
echo "GPU check finished, status $status"
exit "$status"
