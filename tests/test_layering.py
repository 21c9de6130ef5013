"""The package's floors hold: every import of ``ssal_keras`` runs down the order README.md's
"Layout" table states (and BUILD_NOTES.md's module table repeats), there is no import cycle,
and both tables list every module, each once.

Imports are read from the source (ast), those inside functions included, so an import cannot
be deferred into a function to hide a cycle. Importing ``ssal_keras.a.b`` from outside the
package ``ssal_keras.a`` also runs that package's ``__init__``, so that counts as an import of
it too; the root package ``ssal_keras`` is the top floor and runs first whatever is imported,
so it counts only where it is named.
"""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "ssal_keras"
MARKER = "<!-- not figures: the floors of the package (tests/test_layering.py reads this table) -->"


def _modules():
    """Every module of the package, by dotted name relative to it (``""`` is the root)."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT / PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _relative(dotted):
    """``ssal_keras.a.b`` as ``a.b`` (the root as ``""``); None outside the package."""
    if dotted == PACKAGE:
        return ""
    if dotted.startswith(PACKAGE + "."):
        return dotted[len(PACKAGE) + 1:]
    return None


def _packages_run(target, importer):
    """``a.b.c`` and the packages its import runs from ``importer``: ``a.b`` and ``a``, less
    those ``importer`` is inside (they are already running)."""
    parts = target.split(".") if target else []
    inside = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 2)}
    packages = {".".join(parts[:i]) for i in range(1, len(parts))} - inside
    return {target} | packages


def imports_of(path, importer=None):
    """``(module, line)`` for every import of the package in ``path`` (the module
    ``importer``), at any depth."""
    if importer is None:
        importer = next((m for m, p in MODULES.items() if p == path), "")
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [_relative(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            base = _relative(node.module)
            targets = [] if base is None else [
                f"{base}.{alias.name}".lstrip(".")
                if f"{base}.{alias.name}".lstrip(".") in MODULES else base
                for alias in node.names]
        else:
            continue
        for target in targets:
            if target is not None:
                found += [(t, node.lineno) for t in _packages_run(target, importer)]
    return found


def floors_of(document):
    """``{module: floor}`` from the table under MARKER in ``document``: each row's first cell
    is the floor's number, its second the floor's modules in backticks."""
    text = (ROOT / document).read_text(encoding="utf-8")
    assert MARKER in text, f"{document} has no floors table (marker {MARKER})"
    floors, listed = {}, []
    for line in text.split(MARKER, 1)[1].strip().splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        floor = int(cells[0])
        for module in re.findall(r"`([^`]+)`", cells[1]):
            name = "" if module == PACKAGE else module
            listed.append(name)
            floors[name] = floor
    duplicated = sorted({m for m in listed if listed.count(m) > 1})
    assert not duplicated, f"{document} lists {duplicated} on more than one floor"
    return floors


FLOORS = floors_of("README.md")


def test_the_tables_list_every_module_once_and_agree():
    assert sorted(FLOORS) == sorted(MODULES), (
        "README.md's floors table must list every module of the package and nothing else: "
        f"missing {sorted(set(MODULES) - set(FLOORS))}, "
        f"not a module {sorted(set(FLOORS) - set(MODULES))}")
    assert floors_of("BUILD_NOTES.md") == FLOORS


def test_no_import_runs_up_the_floors():
    upward = [f"{module or PACKAGE} (floor {FLOORS[module]}, line {line}) imports "
              f"{target or PACKAGE} (floor {FLOORS[target]})"
              for module, path in MODULES.items()
              for target, line in imports_of(path)
              if FLOORS[target] > FLOORS[module]]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    graph = {m: {t for t, _ in imports_of(p)} - {m} for m, p in MODULES.items()}
    # Depth-first search; a module met again while still on the path closes a cycle.
    state, path, cycles = {}, [], []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("source, expected", [
    ("from ssal_keras.training import config\n", {"training", "training.config"}),
    ("def f():\n    from ssal_keras import runs\n", {"runs"}),
    ("import ssal_keras.data.sources\n", {"data", "data.sources"}),
    ("from ssal_keras.runs.writer import write_json\n", {"runs.writer"}),
    ("import numpy\nfrom . import x\n", set()),
])
def test_the_reader_sees_nested_and_package_imports(tmp_path, source, expected):
    path = tmp_path / "module.py"
    path.write_text(source)
    assert {t for t, _ in imports_of(path, importer="runs.reader")} == expected
