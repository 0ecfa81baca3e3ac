#!/usr/bin/env bash
# Quick start, command 1: set up and build the book (the main job) from its stored outputs,
# all on built-in data. Open book/_build/html/index.html afterwards; the last line printed puts
# the `histolib` command on the PATH.
source "$(dirname "$0")/_venv.sh" "cpu,book"
.venv/bin/jupyter-book build book/ "$@"
echo "book: open $(pwd)/book/_build/html/index.html"
source scripts/_hint.sh
