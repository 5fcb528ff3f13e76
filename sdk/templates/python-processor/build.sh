#!/bin/sh
# Builds {{name}}.wasm from app.py and the vendored Python SDK (needs componentize-py).
set -eu
cd "$(dirname "$0")"
componentize-py -d wit -w ferry:plugin/processor-plugin@0.3.0 componentize app -p . -o {{name}}.wasm
