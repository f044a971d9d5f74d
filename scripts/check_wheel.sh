#!/usr/bin/env bash
# What a user gets: build the wheel, install it into a fresh virtual environment, and run the
# default job and `npsim info` from an empty folder (no checkout on the path, no editable install).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python -m pip wheel . --no-deps -q -w "$tmp/dist"
python -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q "$tmp"/dist/npsim-*.whl
mkdir "$tmp/work"
cd "$tmp/work"
"$tmp/venv/bin/npsim" train --set train.epochs=1 --quiet
"$tmp/venv/bin/npsim" info runs/default-s0.h5
"$tmp/venv/bin/npsim" data fashion-mnist
echo "wheel check: ok"
