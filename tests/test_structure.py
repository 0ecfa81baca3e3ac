"""The package's shape, read from its source: imports flow one way, functions stay small.

- No import circle among histolib's modules: a package's ``__init__`` counts as a module, and
  imports inside functions and under ``TYPE_CHECKING`` count too (so ``from histolib.data import
  load`` inside a ``data`` submodule would be a circle).
- The floors: layers import nothing from ``data``, ``models`` or above; ``data`` imports nothing
  from ``models``, the run modules, ``evaluate``, ``saliency``, ``slide`` or ``plots``.
- An import inside a function only defers a heavy or optional third-party package, and says so
  in a comment on its line (``# deferred: ...``).
- No function takes more than 10 parameters (``self``/``cls`` aside) or hides them behind
  ``*args``/``**kwargs`` (save a Keras layer's ``__init__`` handing ``**kwargs`` on to
  ``super().__init__``: Keras's own arguments, ``name`` and ``dtype``, which ``from_config``
  passes back); none is longer than 50 lines from ``def`` to its end, its docstring
  excepted (nested functions count toward the outer one); no module is longer than 400 lines.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "histolib"
MAX_PARAMETERS, MAX_FUNCTION_LINES, MAX_MODULE_LINES = 10, 50, 400
# Floors: a module of the first group imports nothing whose name starts with one of the second.
FORBIDDEN = {
    "histolib.layers": ("histolib.data", "histolib.models", "histolib.train", "histolib.experiment",
                        "histolib.frozen", "histolib.evaluate", "histolib.saliency", "histolib.slide",
                        "histolib.plots", "histolib.config", "histolib.runs", "histolib.crossval", "histolib.cli"),
    "histolib.data": ("histolib.models", "histolib.train", "histolib.experiment", "histolib.frozen",
                      "histolib.runs", "histolib.config", "histolib.crossval", "histolib.evaluate",
                      "histolib.saliency", "histolib.slide", "histolib.plots", "histolib.cli"),
}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _targets(name: str, path: Path, node, known) -> list[str]:
    """The histolib modules an import statement loads: ``from pkg import sub`` is the submodule,
    ``from pkg import attribute`` the package."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    found = []
    for target in names:
        while target not in known and "." in target:
            target = target.rpartition(".")[0]
        if target in known and target != name:
            found.append(target)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        graph[name] = {t for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                       for t in _targets(name, path, node, known)}
    return graph


def find_cycle(graph) -> list[str] | None:
    """One import circle, as the modules in order, or ``None``."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_sees_a_package_init_in_a_circle():
    graph = {"histolib.data": {"histolib.data.folders"}, "histolib.data.folders": {"histolib.data"}}
    assert find_cycle(graph) == ["histolib.data", "histolib.data.folders", "histolib.data"]
    known = {"histolib.data": None, "histolib.data.folders": None}
    node = ast.parse("from histolib.data import load").body[0]
    assert _targets("histolib.data.folders", PACKAGE / "data" / "folders.py", node, known) == ["histolib.data"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_each_floor_imports_nothing_above_it():
    wrong = [f"{name} imports {target}" for name, targets in import_graph().items() for floor, above in
             FORBIDDEN.items() if name == floor or name.startswith(floor + ".") for target in targets
             if target.startswith(above)]
    assert not wrong, wrong


def _functions(tree):
    """Top-level functions and methods (nested functions belong to the outer one)."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node
        elif isinstance(node, ast.ClassDef):
            yield from (n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _forwards_layer_arguments(function) -> bool:
    """A Keras layer's ``__init__(..., **kwargs)`` that hands ``kwargs`` to ``super().__init__``."""
    if function.name != "__init__" or function.args.vararg or not function.args.kwarg:
        return False
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "__init__"
               and any(k.arg is None and isinstance(k.value, ast.Name) and k.value.id == function.args.kwarg.arg
                       for k in node.keywords) for node in ast.walk(function))


def _body_lines(function) -> int:
    first = function.body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
    lines = function.end_lineno - function.lineno + 1
    return lines - (first.end_lineno - first.lineno + 1 if docstring else 0)


@pytest.mark.parametrize("name", list(modules()))
def test_functions_are_small_and_say_their_parameters(name):
    path = modules()[name]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path}: {len(text.splitlines())} lines"
    problems = []
    for function in _functions(ast.parse(text)):
        args = function.args
        params = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
        if len(params) > MAX_PARAMETERS:
            problems.append(f"{function.name}: {len(params)} parameters")
        if (args.vararg or args.kwarg) and not _forwards_layer_arguments(function):
            problems.append(f"{function.name}: *args/**kwargs")
        if _body_lines(function) > MAX_FUNCTION_LINES:
            problems.append(f"{function.name}: {_body_lines(function)} lines")
    assert not problems, f"{path}: {problems}"


@pytest.mark.parametrize("name", list(modules()))
def test_imports_inside_functions_only_defer_heavy_packages(name):
    path = modules()[name]
    text = path.read_text()
    lines = text.splitlines()
    problems = []
    for function in _functions(ast.parse(text)):
        for node in ast.walk(function):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if getattr(node, "level", 0) or (module or "").startswith("histolib"):
                    problems.append(f"line {node.lineno}: histolib imported inside {function.name}")
                elif "# deferred:" not in lines[node.lineno - 1]:
                    problems.append(f"line {node.lineno}: {module} inside {function.name} without '# deferred: why'")
    assert not problems, f"{path}: {problems}"
