#!/usr/bin/env bash
# The one benchmark command: ./bench/run.sh [python -m bench options]
# Installs what it needs (wrk via apt-get when missing and we are root), then runs the
# benchmark with the project's venv. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if ! "$PY" -c "import proxy, aiohttp, orjson" 2>/dev/null; then
  echo "installing persona-proxy into $($PY -c 'import sys; print(sys.prefix)')" >&2
  "$PY" -m pip install -q -e .
fi
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing wrk (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq wrk >/dev/null || true
  fi
  command -v wrk >/dev/null 2>&1 || echo "wrk unavailable: falling back to the Python load generator" >&2
fi
exec "$PY" -m bench "$@"
