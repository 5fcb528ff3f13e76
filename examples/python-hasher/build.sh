#!/bin/sh
# Builds python-hasher.wasm from app.py and the Python SDK.
# Needs componentize-py: pip install componentize-py==0.25.1
set -eu
cd "$(dirname "$0")"
componentize-py -d ../../wit -w ferry:plugin/processor-plugin@0.3.0 \
    componentize app -p . -p ../../sdk/python -o "${1:-python-hasher.wasm}"
