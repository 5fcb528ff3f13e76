#!/bin/sh
# Builds {{name}}.wasm. Needs componentize-py: pip install -r requirements.txt
set -eu
cd "$(dirname "$0")"
componentize-py -d wit -w ferry:plugin/exporter-plugin@0.3.0 componentize app -p . -o {{name}}.wasm
