#!/usr/bin/env bash
# System packages the browser test needs: Debian's chromium (driven headless by Playwright; the package
# never runs `playwright install`). Idempotent: does nothing when /usr/bin/chromium exists. Never fails the
# setup: without root (or without apt-get) it prints a warning, and the browser test then fails under CI=true
# and is skipped locally.
set -uo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: apt-get not found; install Chromium yourself for tests/test_web_browser.py" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "warning: /usr/bin/chromium is missing and this is not root; run 'sudo apt-get install -y chromium'" \
            "for the browser test (tests/test_web_browser.py)" >&2
        exit 0
    fi
else
    SUDO=""
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q chromium >/tmp/mm_rerank_chromium_install.log 2>&1; then
    # the package lists may be stale on a fresh machine
    $SUDO apt-get update -q >>/tmp/mm_rerank_chromium_install.log 2>&1 || true
    if ! $SUDO apt-get install -y -q chromium >>/tmp/mm_rerank_chromium_install.log 2>&1; then
        echo "warning: 'apt-get install chromium' failed (log: /tmp/mm_rerank_chromium_install.log);" \
            "the browser test needs /usr/bin/chromium" >&2
        exit 0
    fi
fi
echo "installed chromium: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
