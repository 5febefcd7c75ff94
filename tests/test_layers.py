"""The layers hold: a module imports only from its own layer or those below it, and spaces and evaluators know
nothing of each other. Kernel <- spaces, evaluators <- search <- the application (the rest of ``paretopress``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
#: folder of the repository -> the import package it installs as (pyproject's package-dir mapping)
PACKAGES = {"paretopress": "paretopress", "spaces": "paretopress.spaces", "evaluators": "paretopress.evaluators",
            "search": "paretopress.search"}
LAYERS = (("kernel", ("paretopress.kernel",)), ("spaces", ("paretopress.spaces",)),
          ("evaluators", ("paretopress.evaluators",)), ("search", ("paretopress.search",)),
          ("application", ("paretopress",)))
RANK = {"kernel": 0, "spaces": 1, "evaluators": 1, "search": 2, "application": 3}


def layer(module: str) -> str:
    """The layer of a paretopress module: the first whose package holds it."""
    return next(name for name, packages in LAYERS
                if any(module == p or module.startswith(f"{p}.") for p in packages))


def modules(root: Path) -> dict[str, Path]:
    """Every module of the distribution under ``root`` by its import name."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The paretopress modules ``path`` imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    names = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, ``level - 1`` packages up
                base = ".".join([*package[:len(package) - node.level + 1], *filter(None, [base])])
            names |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {name for name in names if name in known}


def violations(root: Path) -> list[str]:
    """``importer -> imported`` for every import that points up a layer or across between spaces and evaluators."""
    known = modules(root)
    found = []
    for module, path in known.items():
        mine = layer(module)
        for name in sorted(imported(module, path, known)):
            theirs = layer(name)
            if RANK[theirs] > RANK[mine] or (RANK[theirs] == RANK[mine] and theirs != mine):
                found.append(f"{module} ({mine}) imports {name} ({theirs})")
    return sorted(found)


def test_no_module_imports_upwards():
    assert violations(ROOT) == []


def test_an_upward_import_is_caught(tmp_path):
    """The check itself, on a copy of the tree with deliberate bad imports."""
    for folder in PACKAGES:
        for path in (ROOT / folder).rglob("*.py"):
            target = tmp_path / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())
    (tmp_path / "spaces" / "upward.py").write_text("def f():\n    from paretopress.search.controller import X\n")
    (tmp_path / "evaluators" / "across.py").write_text("from paretopress.spaces import genome\n")
    (tmp_path / "search" / "relative.py").write_text("from ..store import store\n")
    assert violations(tmp_path) == [
        "paretopress.evaluators.across (evaluators) imports paretopress.spaces.genome (spaces)",
        "paretopress.search.relative (search) imports paretopress.store.store (application)",
        "paretopress.spaces.upward (spaces) imports paretopress.search.controller (search)",
    ]


def test_modules_stay_small():
    """No module over ~400 lines: a file a reader takes in at once."""
    assert {m: n for m, p in modules(ROOT).items() if (n := len(p.read_text().splitlines())) > 400} == {}
