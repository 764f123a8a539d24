"""The import graph of jitplan/ and jitmodel/: floors that only go down, no circle, no hidden lazy import.

The contracts live in pyproject.toml ([tool.importlinter]); `lint-imports` checks the whole graph, imports
inside functions and under TYPE_CHECKING included. An import inside a function of another jitplan/jitmodel
module is allowed only to keep start-up fast, and says so at the line (``# lazy: <why>``).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.glob("jitplan/**/*.py"), *ROOT.glob("jitmodel/**/*.py")])


def _function_imports(path: Path):
    """(line, text) of every import of a jitplan/jitmodel module inside a function body."""
    src = path.read_text()
    lines = src.splitlines()
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                names = [child.module or ""] if isinstance(child, ast.ImportFrom) else [a.name for a in child.names]
                relative = isinstance(child, ast.ImportFrom) and child.level > 0
                if relative or any(n.split(".")[0] in ("jitplan", "jitmodel") for n in names):
                    text = "\n".join(lines[child.lineno - 1:child.end_lineno])
                    out.append((child.lineno, text))
            visit(child, inner)

    visit(ast.parse(src), False)
    return out


def test_every_lazy_internal_import_says_why():
    unmarked = [f"{p.relative_to(ROOT)}:{line}: {text.strip()}" for p in SOURCES
                for line, text in _function_imports(p) if "# lazy:" not in text]
    assert unmarked == [], "imports inside functions must keep start-up fast and say so (# lazy: ...):\n" + \
        "\n".join(unmarked)


def test_the_marker_test_sees_an_unmarked_import(tmp_path):
    probe = tmp_path / "m.py"
    probe.write_text("def f():\n    from jitplan.errors import UsageError\n    return UsageError\n"
                     "def g():\n    from jitplan.errors import UsageError  # lazy: start-up\n    return UsageError\n")
    found = _function_imports(probe)
    assert [("# lazy:" in t) for _, t in found] == [False, True]


def test_floors_contract_holds():
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    r = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "BROKEN" not in r.stdout and r.stdout.count("KEPT") >= 3


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    """A cycle that import-linter cannot see (module execution order) still fails here: each module is
    imported first in a fresh interpreter."""
    mods = []
    for p in SOURCES:
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] in ("__init__", "__main__"):
            parts = parts[:-1] if parts[-1] == "__init__" else []
        if parts:
            mods.append(".".join(parts))
    code = ("import importlib, subprocess, sys\n"
            f"bad = [m for m in {mods!r} if subprocess.run([sys.executable, '-c', 'import ' + m]).returncode]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


def test_every_type_ignore_names_its_code_and_says_why():
    """mypy runs in .ci/run with zero errors; what it is told to ignore is narrow and explained at the line."""
    import re

    bare = []
    for p in SOURCES:
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if "type: ignore" in line and not re.search(r"type: ignore\[[\w-]+(?:, *[\w-]+)*\]\s*(#|;|:|\()\s*\S",
                                                        line):
                bare.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert bare == [], "\n".join(bare)


def _imports_of(path: Path, name: str) -> set[str]:
    """Every jitplan/jitmodel module ``path`` imports (anywhere in it), resolved to a module of the tree."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            out |= {f"{base}.{a.name}" for a in node.names} | {base}
    return {m for m in out if m.split(".")[0] in ("jitplan", "jitmodel")}


def test_no_circle_between_folders():
    """Folders (a module directly in jitplan/ counts as its own node) form no circle: not even a package and
    its sub-package (the provider interface and an implementation), which the sibling contract does not see."""
    names = {}
    for p in SOURCES:
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p

    def node(mod: str) -> str:
        p = names[mod]
        rel = p.relative_to(ROOT).parent
        return mod if len(rel.parts) == 1 and p.name != "__init__.py" else "/".join(rel.parts)

    edges: dict[str, set[str]] = {}
    for mod, p in names.items():
        for target in _imports_of(p, mod):
            while target and target not in names:
                target = target.rpartition(".")[0]
            if target and node(target) != node(mod):
                edges.setdefault(node(mod), set()).add(node(target))

    def reaches(a: str, b: str) -> bool:
        seen, todo = set(), [a]
        while todo:
            x = todo.pop()
            if x == b:
                return True
            if x not in seen:
                seen.add(x)
                todo += edges.get(x, ())
        return False

    circles = sorted(f"{a} -> {b}" for a, bs in edges.items() for b in bs if reaches(b, a))
    assert circles == [], circles
