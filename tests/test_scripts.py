"""The quick-start scripts end one line away from a working ``histolib`` command.

Both scripts print, last, the line that puts ``.venv/bin`` on the PATH (scripts/_hint.sh); these
tests run that printed line in a fresh bash whose PATH has no histolib. They use the .venv the
scripts made and never install anything.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
BARE_PATH = "/usr/local/bin:/usr/bin:/bin"  # what a new shell has before the venv is activated


def _printed_hint(cwd: Path) -> str:
    """The command the scripts print after 'next: ', as printed from the folder `cwd`."""
    out = subprocess.run(["bash", str(SCRIPTS / "_hint.sh")], cwd=cwd, capture_output=True,
                         text=True, check=True, env={"PATH": BARE_PATH}).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("next: "), out
    return lines[0].removeprefix("next: ")


def _bash(command: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    """``command`` in a fresh bash with a bare PATH; ``home`` keeps Keras's and the cache's
    folders out of the checkout."""
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={"PATH": BARE_PATH, "HOME": str(home)})


@pytest.fixture(scope="module")
def venv():
    activate = ROOT / ".venv" / "bin" / "activate"
    if not activate.is_file() or not (ROOT / ".venv" / "bin" / "histolib").is_file():
        pytest.skip("no .venv with histolib here: run `bash scripts/test.sh` (which creates it)")
    return activate


@pytest.mark.parametrize("script", ["book.sh", "test.sh"])
def test_both_quick_start_scripts_end_with_the_hint(script):
    lines = [ln for ln in (SCRIPTS / script).read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    hint = next(i for i, ln in enumerate(lines) if ln == "source scripts/_hint.sh")
    # Only the exit status may follow (test.sh keeps pytest's).
    assert all(re.fullmatch(r'exit "\$status"', ln) for ln in lines[hint + 1:]), lines[hint:]


def test_the_printed_line_from_the_repository_root_runs_histolib(venv, tmp_path):
    assert _bash("command -v histolib", ROOT, tmp_path).returncode != 0, "histolib already on the PATH"
    command = _printed_hint(ROOT)
    assert command.startswith("source .venv/bin/activate"), command  # what the README says
    result = _bash(command, ROOT, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: histolib"), result.stdout[:500]
    assert "train" in result.stdout and "evaluate" in result.stdout


def test_the_printed_line_from_another_folder_uses_an_absolute_path(venv, tmp_path):
    command = _printed_hint(tmp_path)
    assert str(ROOT) in command, command
    result = _bash(command, tmp_path, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: histolib"), result.stdout[:500]


def test_readme_quick_start_says_the_same_line():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "source .venv/bin/activate" in quick


def test_readme_code_blocks_fit_without_scrolling():
    """GitHub shows about 100 characters of a code block before it scrolls; 80 leaves room."""
    long_lines, inside = [], False
    for number, line in enumerate((ROOT / "README.md").read_text().splitlines(), start=1):
        if line.startswith("```"):
            inside = not inside
        elif inside and len(line) > 80:
            long_lines.append(f"line {number}: {len(line)} characters")
    assert not long_lines, long_lines


def test_readme_first_example_is_a_valid_command_on_built_in_data():
    """The first block under 'The command' parses with the real parser (model names come from the
    registry) and reads built-in data only; the model learning is tested in test_models.py."""
    import shlex

    from histolib import cli, data

    section = (ROOT / "README.md").read_text().split("## The command", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    commands = [shlex.split(line) for line in block.splitlines() if line.startswith("histolib ")]
    assert [c[1] for c in commands] == ["train", "evaluate"], commands
    train = cli.build_parser().parse_args(commands[0][1:])
    assert train.model == "seed-pcam-centred" and train.data in data.SPECS
    assert not data.SOURCES[train.data].folder, train.data
    evaluate = commands[1]
    assert evaluate[evaluate.index("--model") + 1] == str(train.out / "best.keras")
    assert evaluate[evaluate.index("--data") + 1] == train.data
