#!/usr/bin/env bash
# The CUDA path proven in one call (see bench/gpu_check.py for the steps and the summary).
#
#   bash bench/gpu_check.sh                 # on a fresh GPU machine, from the repository root
#   bash bench/gpu_check.sh --cpu-dry-run   # every step on CPU with tiny sizes (here, and in CI)
#
# On a GPU machine it needs a Python whose torch is a CUDA build: the first of $PYTHON, python3
# whose torch sees a GPU, else a fresh venv with torch==$TORCH_VERSION from the package index
# (on Linux x86_64 the default index serves CUDA builds). The project's own needs (rasterio and
# the test tools) come from wheels in .whl/ when that folder exists (a machine with no network),
# else from the index. GDAL's Python bindings (osgeo), which the end-to-end step needs, have no
# wheel: where they are missing that step reports so and the others run.
set -euo pipefail
cd "$(dirname "$0")/.."

dry=0
for arg in "$@"; do [ "$arg" = "--cpu-dry-run" ] && dry=1; done

has_cuda_torch() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; }

if [ "$dry" = 1 ]; then
  py="${PYTHON:-}"
  [ -n "$py" ] || { [ -x .venv/bin/python ] && py=.venv/bin/python; } || py=python3
else
  py=""
  for candidate in ${PYTHON:-} python3; do
    if has_cuda_torch "$candidate"; then py="$candidate"; break; fi
  done
  if [ -z "$py" ]; then
    echo "gpu_check: installing torch==${TORCH_VERSION:-2.13.0} (CUDA build) into /tmp/gpu-check-venv"
    python3 -m venv --system-site-packages /tmp/gpu-check-venv
    /tmp/gpu-check-venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
    py=/tmp/gpu-check-venv/bin/python
    has_cuda_torch "$py" || { echo "gpu_check: torch sees no CUDA GPU on this machine"; exit 2; }
  fi
  if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-check-site .whl/*.whl
    export PYTHONPATH="/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  for module in rasterio pytest; do
    "$py" -c "import $module" 2>/dev/null || "$py" -m pip install -q "$module" || true
  done
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$py" bench/gpu_check.py "$@"
