# Sourced by the quick-start scripts: make .venv (Python 3.10+) and install histolib with the given extras.
set -euo pipefail
START_DIR=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
echo "setup: installing histolib[$1] into .venv (first run downloads TensorFlow, a few minutes)"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$1]"
