"""Write a chapter notebook from its percent-format source in book/_src/, optionally executing it.

The chapters are authored as plain text (``book/_src/NN_name.py``) so that reviews see readable
diffs; the notebook next to it (``book/NN_name.ipynb``) is what the book shows and nbval runs.
Cell markers::

    # %% [markdown]                      a Markdown cell; each line's leading "# " is dropped
    # %%                                 a code cell
    # %% tags=["nbval-ignore-output"]    a code cell with tags (a JSON list)

Two placeholders are filled in from the project's one repository setting, ``repository.url`` in
``_config.yml`` (with its ``branch`` and ``path_to_book``), so that no source types the address:
``{{ repository_url }}`` (e.g. the Colab install cell) and ``{{ colab_url }}`` (this notebook
opened in Colab, for the title cell's link).

Usage (from the repository root)::

    .venv/bin/python book/_tools/percent2nb.py book/_src/00_introduction.py [--execute]

``--execute`` runs the notebook in place with nbclient (TensorFlow's C++ logs silenced, oneDNN
off, as in CI) and prints how long it took. ``--reuse-outputs`` instead keeps the outputs stored
in the existing notebook, for edits to Markdown only: it refuses when any code cell changed.
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
import yaml

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def repository(config_path: Path = ROOT / "_config.yml") -> dict:
    """The ``repository`` block of the book's configuration: ``url``, ``branch``, ``path_to_book``."""
    return yaml.safe_load(config_path.read_text())["repository"]


def placeholders(name: str, repo: dict | None = None) -> dict[str, str]:
    """The values of ``{{ repository_url }}`` and ``{{ colab_url }}`` for notebook ``name``
    (e.g. ``"04_attention"``)."""
    repo = repo or repository()
    url = repo["url"].rstrip("/")
    host_path = url.removeprefix("https://github.com/")
    if host_path == url:
        raise ValueError(f"Colab opens notebooks from GitHub only. Received: repository.url={url!r}")
    colab = (f"https://colab.research.google.com/github/{host_path}/blob/{repo['branch']}/"
             f"{repo['path_to_book']}/{name}.ipynb")
    return {"repository_url": url, "colab_url": colab}


def expand(text: str, name: str, repo: dict | None = None) -> str:
    """``text`` with every ``{{ repository_url }}`` and ``{{ colab_url }}`` filled in."""
    for key, value in placeholders(name, repo).items():
        text = text.replace("{{ %s }}" % key, value)
    return text


def reuse_outputs(nb: nbformat.NotebookNode, old: nbformat.NotebookNode, name: str):
    """``old`` (outputs, ids and metadata kept) with the Markdown of ``nb``.

    Raises ``ValueError`` unless both have the same cells, code and tags: only then are the stored
    outputs still what the code gives.
    """
    shape = [(c.cell_type, c.metadata.get("tags", []), c.cell_type == "code" and c.source)
             for c in nb.cells]
    if shape != [(c.cell_type, c.metadata.get("tags", []), c.cell_type == "code" and c.source)
                 for c in old.cells]:
        raise ValueError(f"{name}: cells, code or tags changed, so the stored outputs would be "
                         "stale; run with --execute instead")
    for new, stored in zip(nb.cells, old.cells):
        stored.source = new.source
    return old


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
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--execute", action="store_true", help="execute in place after writing")
    mode.add_argument("--reuse-outputs", action="store_true",
                      help="keep the existing notebook's outputs (Markdown edits only)")
    args = parser.parse_args(argv)
    for src in args.sources:
        target = src.resolve().parent.parent / (src.stem + ".ipynb")
        nb = parse(expand(src.read_text(), src.stem))
        if args.reuse_outputs:
            nb = reuse_outputs(nb, nbformat.read(target, as_version=4), target.name)
        elif args.execute:
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
