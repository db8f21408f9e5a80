#!/usr/bin/env bash
# A real document sample for PDF/HTML ingest (issue 25): Debian's xfig-doc, the xfig reference manual
# (xfig_ref_en.pdf: 176 pages with ~130 embedded screenshots), the xfig how-to (xfig-howto.pdf: captioned
# "Figure N" screenshots) and the HTML manual with its pictures. Fetched with `apt-get download` and
# unpacked with `dpkg-deb -x` (no root needed unless the package lists are missing), into
# .cache/doc-sample/ (git-ignored; never commit it).
#
# Usage: bash scripts/fetch_doc_sample.sh [PACKAGE]   (default xfig-doc; any Debian -doc package works)
# Then:  mm-rerank ingest .cache/doc-sample/xfig-doc --db /tmp/docs-db
#        python benchmarks/ingest_documents.py --folder .cache/doc-sample/xfig-doc
set -euo pipefail
cd "$(dirname "$0")/.."
package="${1:-xfig-doc}"
cache="$PWD/.cache/doc-sample"
out="$cache/$package"
if [ -d "$out" ] && [ -n "$(find "$out" -name '*.pdf' -print -quit)" ]; then
    echo "fetch_doc_sample: $out already holds the sample"
    exit 0
fi
command -v apt-get >/dev/null 2>&1 || { echo "fetch_doc_sample: apt-get not found (a Debian or Ubuntu machine is needed)" >&2; exit 1; }
mkdir -p "$cache/debs" "$cache/unpacked"
cd "$cache/debs"
if ! apt-get download "$package" 2>/dev/null; then
    if [ "$(id -u)" = "0" ]; then
        apt-get update -qq
        apt-get download "$package"
    else
        echo "fetch_doc_sample: 'apt-get download $package' failed; run 'apt-get update' as root first" >&2
        exit 1
    fi
fi
deb="$(ls -t "$cache"/debs/"${package}"_*.deb | head -n 1)"
dpkg-deb -x "$deb" "$cache/unpacked/$package"
docs="$cache/unpacked/$package/usr/share/doc"
mkdir -p "$out"
# keep the documents and the pictures their pages show; leave changelogs and copyright files out
(cd "$docs" && find . -type f \( -name '*.pdf' -o -name '*.html' -o -name '*.htm' -o -name '*.png' \
    -o -name '*.jpg' -o -name '*.gif' \) -print0 | xargs -0 -I{} cp --parents {} "$out/")
echo "fetch_doc_sample: $(find "$out" -name '*.pdf' | wc -l) PDF(s), $(find "$out" -name '*.htm*' | wc -l) HTML file(s) in $out"
