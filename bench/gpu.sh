#!/usr/bin/env bash
# GPU benchmark and dynamic-VRAM checks (bench/gpu.py; `bench/gpu.sh --help` for every option).
#
#   bench/gpu.sh                                    # one NVIDIA GPU: 512 px, 100 steps, fp16 and bf16
#   bench/gpu.sh --patchers dynamic,legacy --budget-s 560   # and again with --no-dynamic-vram, one table
#   bench/gpu.sh --device cpu --size 64 --steps 2   # CPU, tiny (what CI runs)
#   bench/gpu.sh --bundle /tmp/ipx2p-gpu            # online: slim host tree + wheels for an offline GPU machine
#   bench/gpu.sh --comfyui /tmp/ipx2p-gpu/ComfyUI --wheels /tmp/ipx2p-gpu/wheels   # there
#
# Python: $PYTHON if set, else this checkout's .venv, else the python3 on PATH (on a GPU machine
# the one that has torch).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
if [ -n "${PYTHON:-}" ]; then
    python="$PYTHON"
elif [ -x "$repo/.venv/bin/python" ]; then
    python="$repo/.venv/bin/python"
else
    python="$(command -v python3)"
fi
export PYTHONUNBUFFERED=1
exec "$python" "$here/gpu.py" "$@"
