#!/bin/sh
# make demo: the main job (see scripts/demo.py).
set -eu
cd "$(dirname "$0")/.."
exec python3 scripts/demo.py "${1:-build}"
