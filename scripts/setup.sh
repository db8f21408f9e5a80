#!/usr/bin/env bash
# Idempotent setup on a fresh machine: a virtualenv in .venv with the CPU build of torch and the package
# with every extra and the dev tools. Safe to run again; later runs only check what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and pinned: this environment ships the CPU build 2.13.0 as a local wheel; an unpinned torch
# would pull gigabytes of CUDA packages.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
if [ -f scripts/setup_system.sh ]; then
    bash scripts/setup_system.sh
fi
.venv/bin/python -c "import mm_rerank_components, torch; print('setup ok: mm_rerank_components', mm_rerank_components.__version__, '| torch', torch.__version__)"
