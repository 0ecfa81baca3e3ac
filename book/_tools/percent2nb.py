"""Write a chapter notebook from its percent-format source in book/_src/, optionally executing it.

The chapters are authored as plain text (``book/_src/NN_name.py``) so that reviews see readable
diffs; the notebook next to it (``book/NN_name.ipynb``) is what the book shows and nbval runs.
Cell markers::

    # %% [markdown]                      a Markdown cell; each line's leading "# " is dropped
    # %%                                 a code cell
    # %% tags=["nbval-ignore-output"]    a code cell with tags (a JSON list)

Usage (from the repository root)::

    .venv/bin/python book/_tools/percent2nb.py book/_src/00_introduction.py [--execute]

``--execute`` runs the notebook in place with nbclient (TensorFlow's C++ logs silenced, oneDNN
off, as in CI) and prints how long it took.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat

MARKER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def parse(text: str) -> nbformat.NotebookNode:
    """Turn percent-format text into a notebook (no outputs)."""
    nb = nbformat.v4.new_notebook()
    cells: list[tuple[bool, list[str], list[str]]] = []
    for line in text.splitlines():
        match = MARKER.match(line)
        if match:
            tags = json.loads(match["tags"]) if match["tags"] else []
            cells.append((bool(match["md"]), tags, []))
        elif cells:
            cells[-1][2].append(line)
        elif line.strip():
            raise ValueError(f"text before the first '# %%' marker: {line!r}")
    for index, (is_md, tags, lines) in enumerate(cells):
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if is_md:
            body = "\n".join(re.sub(r"^# ?", "", ln) for ln in lines)
            cell = nbformat.v4.new_markdown_cell(body)
        else:
            cell = nbformat.v4.new_code_cell("\n".join(lines))
        cell.id = f"cell-{index:03d}"  # stable ids keep regenerated notebooks' diffs small
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    # The IPython lexer, as an executed notebook records it: the build highlights `!pip` without
    # a warning even before the notebook has been run.
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3",
                                    "codemirror_mode": {"name": "ipython", "version": 3}}
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", type=Path, help="book/_src/NN_name.py files")
    parser.add_argument("--execute", action="store_true", help="execute in place after writing")
    args = parser.parse_args(argv)
    for src in args.sources:
        target = src.resolve().parent.parent / (src.stem + ".ipynb")
        nb = parse(src.read_text())
        if args.execute:
            from nbclient import NotebookClient

            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
            start = time.perf_counter()
            NotebookClient(nb, timeout=900, kernel_name="python3", record_timing=False,
                           resources={"metadata": {"path": str(target.parent)}}).execute()
            print(f"{target.name}: executed in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        nbformat.write(nb, target)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
