#!/usr/bin/env bash
# The test tools, on top of scripts/setup.sh: the "dev" extra in .venv (pytest, ruff, mypy, Playwright's
# Python driver, and the peer clients the tests drive: cohere, langchain-cohere, LlamaIndex's JinaRerank,
# sentence-transformers), then a Chromium for the browser tests.
#
# Chromium: one already on the machine is used (MM_RERANK_CHROMIUM, else /usr/bin/chromium). Otherwise
# Debian's chromium and the libraries it needs that this machine lacks are fetched with `apt-get download`
# and unpacked with `dpkg-deb -x` into .cache/chromium/ (about 120 MB; no root, nothing installed
# system-wide), with a launcher at .cache/chromium/chromium that tests/test_web_browser.py finds.
# (`playwright install` is never run: it downloads a browser build of its own, which cannot be fetched here.)
# Only when the package lists are too old to download from, and only as root, it runs `apt-get update`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev

root="$PWD/.cache/chromium"
launcher="$root/chromium"
if [ -n "${MM_RERANK_CHROMIUM:-}" ] && [ -x "$MM_RERANK_CHROMIUM" ]; then
    echo "setup_test: using MM_RERANK_CHROMIUM=$MM_RERANK_CHROMIUM"
    exit 0
fi
if [ -x /usr/bin/chromium ]; then
    echo "setup_test: using /usr/bin/chromium"
    exit 0
fi
if [ -x "$launcher" ] && "$launcher" --headless --no-sandbox --version >/dev/null 2>&1; then
    echo "setup_test: using $launcher ($("$launcher" --version 2>/dev/null | head -n 1))"
    exit 0
fi

fail() {
    echo "setup_test: $1; the browser tests (tests/test_web_browser.py) need Chromium: install it" \
        "('apt-get install chromium' as root) or set MM_RERANK_CHROMIUM to a chromium binary" >&2
    # under CI the browser tests must run, so a missing browser fails here already
    if [ "${CI:-}" = "true" ]; then exit 1; fi
    exit 0
}

command -v apt-get >/dev/null 2>&1 || fail "apt-get not found"
command -v dpkg-deb >/dev/null 2>&1 || fail "dpkg-deb not found"
log="$PWD/.cache/chromium-fetch.log"
mkdir -p "$root/debs"
: >"$log"
fetch() {
    # chromium and the packages it depends on (not its recommendations) that are not installed here
    local pkgs
    pkgs=$(apt-get install -s --no-install-recommends chromium 2>>"$log" | awk '/^Inst /{print $2}')
    [ -n "$pkgs" ] || return 1
    # shellcheck disable=SC2086
    (cd "$root/debs" && apt-get download $pkgs >>"$log" 2>&1)
}
if ! fetch; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "setup_test: refreshing the package lists (apt-get update)"
        apt-get update -q >>"$log" 2>&1 || true
        fetch || fail "apt-get download of chromium failed (log: $log)"
    else
        fail "apt-get download of chromium failed (log: $log; the package lists may need 'apt-get update' as root)"
    fi
fi
rm -rf "$root/tree"
for deb in "$root"/debs/*.deb; do
    dpkg-deb -x "$deb" "$root/tree"
done
rm -rf "$root/debs"
cat >"$launcher" <<'LAUNCH'
#!/bin/sh
# Debian's chromium unpacked by scripts/setup_test.sh, with the libraries unpacked beside it
here="$(dirname "$(readlink -f "$0")")/tree"
libs=""
for d in "$here"/usr/lib/*-linux-gnu "$here"/usr/lib/*-linux-gnu/pulseaudio; do
    [ -d "$d" ] && libs="$libs${libs:+:}$d"
done
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$here/usr/lib/chromium/chromium" "$@"
LAUNCH
chmod +x "$launcher"
if ! "$launcher" --headless --no-sandbox --version >/dev/null 2>>"$log"; then
    fail "the unpacked chromium does not start (log: $log)"
fi
echo "setup_test: unpacked $("$launcher" --version 2>/dev/null | head -n 1) into $root (no root needed)"
