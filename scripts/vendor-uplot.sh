#!/usr/bin/env bash
# Re-vendor uPlot (https://github.com/leeoniya/uPlot, MIT) for the dashboard from the npm
# registry: its prebuilt IIFE bundle, stylesheet and licence go into proxy/observe/static/,
# which the Python package ships (pyproject: tool.setuptools.package-data).
set -euo pipefail
VERSION="${1:-1.6.32}"
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "uplot@$VERSION" >/dev/null && tar xzf uplot-*.tgz)
dest=proxy/observe/static
cp "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" "$dest/"
cp "$tmp/package/LICENSE" "$dest/uPlot.LICENSE.txt"
echo "uPlot $VERSION vendored into $dest"
