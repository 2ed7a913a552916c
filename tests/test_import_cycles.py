"""No import cycles between the modules of `plugin`, `adapters` and `benchmarks`.

The imports are read with `ast`, not by importing: module-level ones, those inside functions
(lazy ones still run, just later), and `importlib.import_module("literal")`. An edge goes to the
module an import names: `import a.b` to `a.b`; `from a import b` to `a` (the statement reads
`a`'s namespace, half-initialised if `a` is on the way) and to `a.b` when that is a module;
relative imports are resolved. A cycle is reported as the chain of modules that closes it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("plugin", "adapters", "benchmarks")


def module_files() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _literal_import_module(node: ast.Call) -> str | None:
    f = node.func
    called = (isinstance(f, ast.Attribute) and f.attr == "import_module") or (
        isinstance(f, ast.Name) and f.id == "import_module"
    )
    if called and node.args and isinstance(node.args[0], ast.Constant):
        value = node.args[0].value
        return value if isinstance(value, str) else None
    return None


def imported(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The modules of `known` that module `name` (at `path`) imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    yield f"{base}.{alias.name}"
        elif isinstance(node, ast.Call):
            target = _literal_import_module(node)
            if target is not None:
                yield target


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {
        name: {m for m in imported(name, path, known) if m in known and m != name}
        for name, path in files.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as `[a, b, ..., a]`, or None (depth-first, iterative)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_no_module_imports_itself_back() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_the_graph_holds_the_edges_that_could_close_cycles() -> None:
    """The reader sees each kind of import the test relies on (so that a pass means something)."""
    graph = import_graph()
    assert "plugin.enricher" in graph["plugin"]  # module level, `from plugin.enricher import`
    assert "plugin.enricher" in graph["plugin.commands.cli"]  # inside a function
    assert "plugin.commands.verify" in graph["plugin.commands.cli"]
    assert "benchmarks.fleet" in graph["benchmarks.scenarios"]  # `from benchmarks import fleet`
    assert "benchmarks" in graph["benchmarks.scenarios"]


def test_a_cycle_is_found_and_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_importlib_literals_and_relative_imports_are_read(tmp_path: Path) -> None:
    init = tmp_path / "__init__.py"
    init.write_text("from . import b\nfrom .c import x\n")
    mod = tmp_path / "a.py"
    mod.write_text("def f():\n    import importlib\n    return importlib.import_module('p.d')\n")
    known = {"p", "p.a", "p.b", "p.c", "p.d"}
    assert set(imported("p", init, known)) == {"p", "p.b", "p.c"}
    assert "p.d" in set(imported("p.a", mod, known))


def test_the_library_imports_no_sidecar_module() -> None:
    """Imports run one way, the sidecar above the enricher: importing `plugin` (the library
    and its client hooks) loads no `plugin.serve` module, so no core module reaches up."""
    import subprocess
    import sys

    code = (
        "import sys, plugin, plugin.middleware\n"
        "print([m for m in sys.modules if m.startswith('plugin.serve')])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
