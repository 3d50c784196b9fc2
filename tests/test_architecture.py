"""The layout's rules (docs/architecture.md), checked on the source: which package may import
which, and no import circles between modules (lazy and type-only imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# folder -> import package
SOURCES = {"engine": "runbook_engine", "plugins": "runbook_engine.plugins"}
SOURCES_SCHEMAS = ("schemas", "runbook_engine.schemas")

BASE = {"errors", "masking", "files", "actions", "schemas", "processes", "__init__"}
# a layer -> the layers it may import (besides itself and the base modules)
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "format": set(),
    "state": {"format"},
    "graph": {"format", "state"},
    "plan": {"format", "state", "graph", "cohort"},
    "console": {"format"},
    "cohort": {"format", "state", "plugins"},
    "run": {"format", "state", "graph", "console", "cohort"},
    "review": {"format"},
    "report": {"format", "state", "graph"},
    "plugins": {"format", "plugins"},
    "commands": {
        "format",
        "state",
        "graph",
        "plan",
        "console",
        "run",
        "review",
        "report",
        "plugins",
        "cohort",
    },
    "cli": {"state"},  # state/location.py: what --state names, parsed once
    "__main__": {"cli"},
}
# the one sanctioned upward reference: the registry finds the built-in actions by name
EXCEPTIONS = {
    ("runbook_engine.actions", "runbook_engine.plugins"),
    # type-only: ActionContext.runbook is the parsed Runbook
    ("runbook_engine.actions", "runbook_engine.format.model"),
}


def modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for folder, package in [*SOURCES.items(), SOURCES_SCHEMAS]:
        base = ROOT / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if folder == "engine" and rel.parts[0] == "plugins":
                continue
            out[name] = path
    return out


def layer(module: str) -> str:
    parts = module.split(".")[1:]
    if not parts:
        return "base"
    if parts[0] in BASE:
        return "base"
    return parts[0]


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if not target.startswith("runbook_engine"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("runbook_engine"):
                    found.add(alias.name)
    return {f for f in found if f in known and f != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def test_packages_import_downward_only() -> None:
    bad = []
    for mod, targets in sorted(graph().items()):
        src = layer(mod)
        for t in sorted(targets):
            dst = layer(t)
            if dst in ("base", src) or dst in ALLOWED[src] or (mod, t) in EXCEPTIONS:
                continue
            bad.append(f"{mod} ({src}) imports {t} ({dst})")
    assert not bad, "\n".join(bad)


def test_no_import_circles() -> None:
    import networkx as nx

    g = nx.DiGraph()
    for mod, targets in graph().items():
        # a package's __init__ importing its own modules is not a circle of modules
        g.add_edges_from((mod, t) for t in targets if not t.startswith(mod + "."))
    cycles = list(nx.simple_cycles(g))
    assert not cycles, "\n".join(" -> ".join([*c, c[0]]) for c in cycles)


@pytest.mark.parametrize("folder", ["engine", "plugins"])
def test_every_package_says_what_lives_there(folder: str) -> None:
    for init in (ROOT / folder).rglob("__init__.py"):
        if init.parent.name == "commands" or init.parent == ROOT / folder:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "May import" in doc, f"{init}: the docstring says what may be imported"


def test_every_package_is_installed() -> None:
    """A folder with an __init__.py that setup.cfg does not list would be missing from a
    non-editable install (an ImportError on the first run)."""
    cfg = (ROOT / "setup.cfg").read_text(encoding="utf-8")
    listed = cfg.split("packages =", 1)[1].split("install_requires", 1)[0].split()
    for folder, package in [*SOURCES.items(), SOURCES_SCHEMAS]:
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            if folder == "engine" and rel[:1] == ("plugins",):
                continue
            assert ".".join([package, *rel]) in listed, init


def test_no_module_carries_its_folders_prefix() -> None:
    """Prefixes that a folder should carry: no two modules in one folder share a prefix
    before an underscore (diff_load, diff_compare, ... became review/)."""
    for folder in ("engine", "plugins"):
        for directory in [ROOT / folder, *(p for p in (ROOT / folder).rglob("*") if p.is_dir())]:
            names = [p.stem for p in directory.glob("*.py") if "_" in p.stem.strip("_")]
            prefixes = [n.split("_", 1)[0] for n in names]
            shared = {p for p in prefixes if prefixes.count(p) > 1}
            assert not shared, f"{directory}: modules share the prefixes {shared}"


def test_the_architecture_page_names_every_package_and_module() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for folder in sorted(p for p in (ROOT / "engine").iterdir() if (p / "__init__.py").exists()):
        assert f"{folder.name}/" in page, f"docs/architecture.md never names {folder.name}/"
        if folder.name == "commands":
            continue
        for module in sorted(folder.glob("*.py")):
            if module.stem != "__init__":
                assert f"`{module.stem}`" in page, (
                    f"docs/architecture.md: {folder.name}/{module.name}"
                )
