#!/usr/bin/env bash
# Quick start, command 2: set up and run every test (unit tests, then each book chapter under nbval).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_layers.py -x`.
source "$(dirname "$0")/_venv.sh" "cpu,book,dev"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3} TF_ENABLE_ONEDNN_OPTS=${TF_ENABLE_ONEDNN_OPTS:-0}
status=0
.venv/bin/python -m pytest "$@" || status=$?
source scripts/_hint.sh
exit "$status"
