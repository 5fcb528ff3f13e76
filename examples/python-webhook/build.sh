#!/bin/sh
# Builds python-webhook.wasm from app.py and the Python SDK.
# Needs componentize-py: pip install componentize-py==0.25.1
set -eu
cd "$(dirname "$0")"
componentize-py -d ../../wit -w ferry:plugin/exporter-plugin@0.3.0 \
    componentize app -p . -p ../../sdk/python -o "${1:-python-webhook.wasm}"
