"""The book: table of contents and configuration, chapter template, a clean build with warnings as
errors, and the built pages in headless Chromium (loads, own images, equations, no tracebacks).

The notebooks themselves are executed and compared by nbval (``pytest --nbval`` collects
``book/*.ipynb``); these tests check what nbval does not.
"""

from __future__ import annotations

import functools
import html
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTER_NUMBERS = [f"{i:02d}" for i in range(11)]
SECTIONS = ["Overview", "Prerequisites", "Imports", "Summary", "Exercises", "Resources",
            "What's next"]
# (page, section anchor): the gallery of chapter 1 and the equations and maps of chapter 4.
SCREENSHOT_PAGES = [("01_data", "patchcamelyon-and-the-centre-32x32-rule"),
                    ("04_attention", "differential-attention-ye-et-al-2024")]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


def _percent2nb():
    """book/_tools/percent2nb.py as a module (the tool that writes notebooks from sources)."""
    spec = importlib.util.spec_from_file_location("percent2nb", BOOK / "_tools" / "percent2nb.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _toc_files() -> list[tuple[str, str]]:
    """(part caption, file) for every entry of book/_toc.yml, in order."""
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    return [(part["caption"], entry["file"]) for part in toc["parts"]
            for entry in part["chapters"]]


def _chapters() -> list[str]:
    return [f for _, f in _toc_files() if re.fullmatch(r"\d\d_\w+", f)]


def _notebooks() -> list[Path]:
    return sorted(BOOK.glob("*.ipynb"))


def _in_progress(nb: nbformat.NotebookNode) -> bool:
    return nb.metadata.get("histolib", {}).get("status") == "in-progress"


# --- (a) table of contents, configuration, chapter template ------------------------------------

def test_book_config_is_a_link_to_the_top_level_config():
    link = BOOK / "_config.yml"
    assert link.is_symlink(), "book/_config.yml must be a symlink (a copy would silently win)"
    assert Path(link.readlink()) == Path("../_config.yml")
    assert link.resolve() == (ROOT / "_config.yml").resolve()


def test_config_never_executes_or_hides_errors_and_serves_mathjax_locally():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["execute"]["allow_errors"] is False
    sphinx = config["sphinx"]["config"]
    assert "://" not in sphinx["mathjax_path"], sphinx["mathjax_path"]
    vendored = [BOOK / static / sphinx["mathjax_path"] for static in sphinx["html_static_path"]]
    assert any(path.is_file() for path in vendored), f"MathJax not vendored at {vendored}"
    assert not (BOOK / "_static").exists() or not list((BOOK / "_static").rglob("*.js")), (
        "jupyter-book loads every .js under book/_static on every page")
    assert {"sphinx.ext.autodoc", "sphinx.ext.napoleon"} <= set(config["sphinx"]["extra_extensions"])


def test_toc_lists_chapters_00_to_10_in_order_then_appendices():
    entries = _toc_files()
    chapters = _chapters()
    assert [c[:2] for c in chapters] == CHAPTER_NUMBERS
    assert [caption for caption, _ in entries][0] == "Introduction"
    assert entries[-1][0] == "Appendices"
    appendices = [f for caption, f in entries if caption == "Appendices"]
    assert [a[:2] for a in appendices] == ["A1", "A2", "A3"]
    for _, name in entries:
        matches = [p for p in BOOK.glob(name + ".*") if p.suffix in (".ipynb", ".md")]
        assert len(matches) == 1, f"{name}: expected one .ipynb or .md file, found {matches}"
    assert not [c for c in chapters if not (BOOK / f"{c}.ipynb").is_file()], "chapters are notebooks"


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_no_error_outputs_except_cells_tagged_raises_exception(path):
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "raises-exception" in cell.metadata.get("tags", []):
            continue
        for output in cell.outputs:
            assert output.output_type != "error", (
                f"{path.name} cell {index}: {output.get('ename')}: {output.get('evalue')}")
            text = output.get("text", "") if output.output_type == "stream" else ""
            assert "Traceback (most recent call last)" not in text, f"{path.name} cell {index}"


@pytest.mark.parametrize("name", _chapters())
def test_chapter_follows_the_template(name):
    path = BOOK / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    if _in_progress(nb):
        pytest.skip(f"{name} is marked in progress (metadata histolib.status)")
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = [c.source for c in nb.cells if c.cell_type == "code"]

    assert re.match(r"# \S", nb.cells[0].source), "the first cell starts with the title"
    headings = re.findall(r"^## (.+?)\s*$", markdown, flags=re.M)
    positions = [next((i for i, h in enumerate(headings) if h == s), None) for s in SECTIONS]
    assert None not in positions, f"missing sections: {[s for s, p in zip(SECTIONS, positions) if p is None]}"
    assert positions == sorted(positions), f"template sections out of order: {headings}"
    overview = markdown.split("## Overview", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"^1\. \S", overview, flags=re.M), "Overview lists its topics, numbered"
    prereq = markdown.split("## Prerequisites", 1)[1].split("\n## ", 1)[0]
    assert "| Concepts" in prereq and "Time to learn" in prereq
    exercises = markdown.split("## Exercises", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"```\{dropdown\}|:::\{dropdown\}|\{toggle\}", exercises), (
        "exercise solutions are folded away in a dropdown")

    colab = _percent2nb().placeholders(name)["colab_url"]
    assert f"[Open in Colab]({colab})" in nb.cells[0].source, "Open in Colab link in the title cell"
    setup = [c for c in code if '"google.colab" in sys.modules' in c]
    assert setup and "pip install" in setup[0], "a setup cell that installs histolib on Colab only"
    assert any("HISTOLIB_PROFILE" in c and "PROFILE" in c for c in code), "hyperparameter cell"
    assert any(re.search(r"^(import|from) histolib", c, flags=re.M) for c in code)
    hidden = [c for c in code if re.search(r"^(def|class) \w", c, flags=re.M)]
    assert not hidden, f"library code belongs in histolib, not in cells: {hidden[0][:80]!r}"


@pytest.mark.parametrize("source", sorted((BOOK / "_src").glob("*.py")), ids=lambda p: p.stem)
def test_notebook_is_what_percent2nb_writes_from_its_source(source):
    """A chapter is edited in book/_src/NN_name.py; its notebook must be regenerated from it
    (placeholders such as the Colab link filled in as percent2nb does)."""
    notebook = BOOK / f"{source.stem}.ipynb"
    assert notebook.is_file(), f"{source.name} has no notebook {notebook.name}"
    tool = _percent2nb()
    expected = tool.parse(tool.expand(source.read_text(), source.stem))
    stored = nbformat.read(notebook, as_version=4)
    assert [c.source for c in stored.cells] == [c.source for c in expected.cells], (
        f"book/{source.stem}.ipynb differs from book/_src/{source.stem}.py: run book/_tools/percent2nb.py")
    tool.reuse_outputs(expected, stored, source.stem)  # cell types and tags too


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_markdown_shows_no_remote_images(path):
    """Remote images (the old Colab badge) show broken offline; links are fine."""
    nb = nbformat.read(path, as_version=4)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    remote = re.findall(r"!\[[^\]]*\]\((?:https?:)?//[^)]*\)|<img[^>]+src=\"(?:https?:)?//", markdown)
    assert not remote, f"{path.name}: {remote}"


# --- (b) a clean build with warnings as errors -------------------------------------------------

def _jupyter_book() -> str:
    beside = Path(sys.executable).with_name("jupyter-book")
    return str(beside) if beside.exists() else (shutil.which("jupyter-book") or "jupyter-book")


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """Build the book from clean into a temporary folder; returns (html dir, build log)."""
    out = tmp_path_factory.mktemp("book")
    proc = subprocess.run(
        [_jupyter_book(), "build", "book/", "--path-output", str(out), "--all", "-W", "-n",
         "--keep-going"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
        # autodoc imports histolib, hence TensorFlow: keep its C++ log lines out of the log.
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"})
    log = proc.stdout + proc.stderr
    return out / "_build" / "html", log, proc.returncode


@pytest.mark.slow
def test_book_builds_from_clean_without_warnings(built_book):
    site, log, returncode = built_book
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert returncode == 0 and not warnings, "\n".join(warnings) or log[-3000:]
    assert "build succeeded" in log
    for name in [f for _, f in _toc_files()]:
        assert (site / f"{name}.html").is_file(), f"{name}.html not built"
    assert (site / "_static" / "mathjax" / "tex-svg.js").is_file()


@pytest.mark.slow
def test_built_pages_load_nothing_from_the_network(built_book):
    site, _, _ = built_book
    tag = re.compile(r"<(script|link)\b[^>]*>")
    remote = re.compile(r"\b(?:src|href)=\"(?:https?:)?//")
    for page in sorted(site.glob("*.html")):
        tags = [m.group(0) for m in tag.finditer(page.read_text())
                if remote.search(m.group(0))
                and (m.group(1) == "script" or 'rel="stylesheet"' in m.group(0))]
        assert not tags, f"{page.name} loads from the network: {tags}"


# --- (c) the built pages in headless Chromium ---------------------------------------------------

# Loads each page in an iframe of a same-origin harness page, waits for MathJax and for every
# image, and writes what it found into <pre id="result"> for --dump-dom to return.
HARNESS = """<!doctype html><html><body><pre id="result">pending</pre><script>
const pages = %s;
function check(page) {
  return new Promise(resolve => {
    const frame = document.createElement("iframe");
    frame.width = 1280; frame.height = 2000;
    frame.onload = async () => {
      const win = frame.contentWindow, doc = frame.contentDocument;
      if (win.MathJax && win.MathJax.startup && win.MathJax.startup.promise) {
        try { await win.MathJax.startup.promise; } catch (e) {}
      }
      const images = [...doc.images];
      images.forEach(img => { img.loading = "eager"; });
      await Promise.all(images.map(img => img.complete ? null :
        new Promise(done => { img.addEventListener("load", done); img.addEventListener("error", done); })));
      const allowed = el => el.closest(".tag_raises-exception") !== null;
      resolve({
        title: doc.title,
        images: images.map(img => ({src: img.getAttribute("src"), ok: img.naturalWidth > 0})),
        math: doc.querySelectorAll(".math").length,
        mjx: doc.querySelectorAll("mjx-container").length,
        mjx_errors: doc.querySelectorAll("mjx-merror").length,
        tracebacks: [...doc.querySelectorAll(".traceback, .output.error")].filter(el => !allowed(el)).length,
        traceback_text: [...doc.querySelectorAll("pre, .output")].filter(el => !allowed(el)
          && el.textContent.includes("Traceback (most recent call last)")).length,
        system_messages: doc.querySelectorAll(".system-message, .problematic").length,
        // Printed results wider than their box (book/_css/histolib.css wraps them).
        wide_text: [...doc.querySelectorAll(".cell_output .output.stream pre, .cell_output .output.text_plain pre")]
          .filter(el => el.scrollWidth > el.clientWidth + 1).map(el => el.textContent.slice(0, 60)),
        // Tables past the article's right edge with no sideways scrolling box around them.
        cut_tables: [...doc.querySelectorAll("article table")].filter(table => {
          const article = table.closest("article");
          if (table.getBoundingClientRect().right <= article.getBoundingClientRect().right + 1) return false;
          for (let el = table.parentElement; el && el !== article; el = el.parentElement)
            if (["auto", "scroll"].includes(win.getComputedStyle(el).overflowX)) return false;
          return true;
        }).map(table => table.textContent.trim().slice(0, 60)),
      });
    };
    frame.src = page;
    document.body.appendChild(frame);
  });
}
(async () => {
  const results = {};
  for (const page of pages) results[page] = await check(page);
  document.getElementById("result").textContent = JSON.stringify(results);
})();
</script></body></html>
"""


@pytest.fixture(scope="module")
def served_site(built_book):
    site, _, returncode = built_book
    if returncode != 0:
        pytest.fail("the book did not build; see test_book_builds_from_clean_without_warnings")
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output readable
        pass


def _chromium(tmp_path, *args, timeout=240) -> str:
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).exists():
        pytest.skip("headless Chromium not installed (apt-get install chromium; .ci/run does)")
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    proc = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_pages_load_with_their_images_equations_and_no_tracebacks(served_site, tmp_path):
    site, url = served_site
    if not (shutil.which("chromium") or Path("/usr/bin/chromium").exists()):
        pytest.skip("headless Chromium not installed (apt-get install chromium; .ci/run does)")
    pages = [f"{name}.html" for _, name in _toc_files()] + ["index.html"]
    (site / "_check.html").write_text(HARNESS % json.dumps(pages))
    dom = _chromium(tmp_path, "--virtual-time-budget=60000", "--dump-dom", f"{url}/_check.html")
    found = re.search(r'<pre id="result">(.*?)</pre>', dom, flags=re.S)
    assert found and found.group(1) != "pending", dom[-2000:]
    results = json.loads(html.unescape(found.group(1)))
    assert sorted(results) == sorted(pages)
    for page, r in results.items():
        assert r["title"], f"{page} did not load"
        own = [i for i in r["images"] if not re.match(r"https?://(?!127\.0\.0\.1)", i["src"] or "")]
        assert all(i["ok"] for i in own), f"{page}: images that did not load: {own}"
        if r["math"]:
            assert r["mjx"] >= r["math"] and not r["mjx_errors"], f"{page}: equations not rendered: {r}"
        assert not r["tracebacks"] and not r["traceback_text"], f"{page} shows a traceback"
        assert not r["system_messages"], f"{page} shows a Sphinx system message"
        assert not r["wide_text"], f"{page}: printed lines cut at the right edge: {r['wide_text']}"
        assert not r["cut_tables"], f"{page}: tables cut at the right edge: {r['cut_tables']}"
    chapters_with_math = [p for p, r in results.items() if r["math"]]
    assert chapters_with_math, "no page has an equation, so MathJax was never exercised"


@pytest.mark.slow
def test_screenshots_of_two_pages(served_site, tmp_path):
    target = BOOK / "_build" / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    site, url = served_site
    for name, anchor in SCREENSHOT_PAGES:
        png = target / f"{name}.png"
        png.unlink(missing_ok=True)
        # Headless Chromium paints nothing when a top-level page jumps to an anchor, so the page
        # goes in a same-size iframe, where the jump works.
        (site / f"_shot_{name}.html").write_text(
            '<!doctype html><html><body style="margin:0"><iframe src="'
            f'{name}.html#{anchor}" style="border:0;width:1280px;height:2000px"></iframe></body></html>')
        _chromium(tmp_path, "--virtual-time-budget=15000", "--hide-scrollbars",
                  "--window-size=1280,2000", f"--screenshot={png}", f"{url}/_shot_{name}.html")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"no screenshot at {png}"
        assert png.stat().st_size > 20_000, f"{png} looks blank ({png.stat().st_size} bytes)"
        print(f"screenshot: {png}")
