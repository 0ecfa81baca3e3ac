"""Packaging: pyproject.toml and environment.yml name the same packages; TensorFlow is an extra."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _canonical(requirement: str) -> str:
    """One requirement string in a comparable form (name lower-cased, extras, specifier, marker)."""
    req = Requirement(requirement)
    name = req.name.lower().replace("_", "-")
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    marker = f"; {req.marker}" if req.marker else ""
    return f"{name}{extras}{req.specifier}{marker}"


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = _pyproject()
    extras = project["optional-dependencies"]
    expected = {_canonical(r) for r in project["dependencies"] + extras["cpu"] + extras["book"] + extras["dev"]}

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_canonical(r) for r in pip_section if not r.startswith("-e")}

    assert listed == expected, (
        f"only in environment.yml: {sorted(listed - expected)}; only in pyproject.toml: {sorted(expected - listed)}"
    )


def test_tensorflow_comes_only_through_extras():
    project = _pyproject()
    names = {Requirement(r).name for r in project["dependencies"]}
    assert not names & {"tensorflow", "tensorflow-cpu", "tf-nightly"}
    cpu = [Requirement(r) for r in project["optional-dependencies"]["cpu"]]
    # tensorflow-cpu on x86-64 and plain tensorflow elsewhere, never both on one machine.
    for machine, wanted in [("x86_64", "tensorflow-cpu"), ("AMD64", "tensorflow-cpu"), ("arm64", "tensorflow"), ("aarch64", "tensorflow")]:
        chosen = [r.name for r in cpu if r.marker.evaluate({"platform_machine": machine})]
        assert chosen == [wanted], (machine, chosen)
    gpu = [Requirement(r) for r in project["optional-dependencies"]["gpu"]]
    assert [(r.name, r.extras) for r in gpu] == [("tensorflow", {"and-cuda"})]


def test_import_without_tensorflow_says_how_to_install_it():
    code = "import sys; sys.modules['tensorflow'] = None; import histolib"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0
    assert "ImportError: histolib needs TensorFlow 2.16 or newer" in result.stderr
    assert "histolib[cpu]" in result.stderr


def test_console_script_is_declared():
    assert _pyproject()["scripts"] == {"histolib": "histolib.cli:main"}


@pytest.mark.slow
def test_wheel_ships_the_data_manifests(tmp_path):
    """A pip install from git (Colab's route) builds a wheel: download_pcam needs its manifest there."""
    import shutil
    import zipfile

    source = tmp_path / "source"  # a copy, so the build leaves no build/ folder in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "book", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(source)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("histolib-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "histolib/data/pcam.json" in names and "histolib/data/ovarian.sha256" in names
    assert not [n for n in names if n.startswith(("tests/", "book/", "bench/"))]


def test_the_repository_address_has_one_setting():
    """repository.url in _config.yml; notebooks get it from book/_tools/percent2nb.py (a test in
    test_book.py checks each is what the tool writes from its source), nothing else types it."""
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    owner_repo = url.rstrip("/").removeprefix("https://github.com/")
    assert owner_repo.count("/") == 1, url
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    generated = {f"book/{p.stem}.ipynb" for p in (ROOT / "book" / "_src").glob("*.py")}
    copies = []
    for name in listed.stdout.splitlines():
        path = ROOT / name
        if name in generated or name == "_config.yml" or path.is_symlink() or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if owner_repo.lower() in text.lower():
            copies.append(name)
    assert not copies, f"the repository address is typed in {copies}; read it from _config.yml"
    assert (ROOT / "_config.yml").read_text().count(owner_repo) == 1
