#!/usr/bin/env bash
# Quick start, command 1: set up and build the book (the main job) from its stored outputs,
# all on built-in data. Open book/_build/html/index.html afterwards.
source "$(dirname "$0")/_venv.sh" "cpu,book"
.venv/bin/jupyter-book build book/ "$@"
echo "book: open $(pwd)/book/_build/html/index.html"
