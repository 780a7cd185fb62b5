"""The layering rule: five floors, each importing only its own area and the floors below:
the core (``teachloop/``) at the bottom; ``agents`` and ``store`` on it (each only the core);
``graphs`` above them (lessons drive the agents and write the store); ``training`` above graphs
(it reads the store and runs the student through the agents; its loop and experiments run
lessons through graphs, which never imports training: the data flows agents <- graphs -> store
-> training); the app (``teachloop/cli.py``, ``teachloop/view/``) on top, imported by nothing.

Read from the source (every import statement, those inside functions and ``TYPE_CHECKING``
blocks too), not from what happens to be imported at run time. An import the rule forbids either
moves, or goes in ``ALLOWED_VIOLATIONS`` with the reason it is there and what would remove it.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Layer -> the layers it may import from (its own included): CONTRIBUTING's "Layout" drawing.
MAY_IMPORT: dict[str, frozenset[str]] = {
    # teachloop/: config, messages, records, errors, answers, domains, environment, progress.
    # Shared by everyone, so it depends on no area.
    "core": frozenset({"core"}),
    # Models and the agents that talk through them: backends, embedded model, serving, prompts,
    # teacher, student, mastery.
    "agents": frozenset({"core", "agents"}),
    # The DuckDB store knows messages and records, not who wrote them or what reads them.
    "store": frozenset({"core", "store"}),
    # Lessons drive the agents and write to the store.
    "graphs": frozenset({"core", "agents", "store", "graphs"}),
    # Training reads the store, runs the student model (evaluation, adapters) through the agents'
    # backends, and its periodic jobs (the loop's rounds, experiments' arms) run lessons through
    # graphs; nothing below it imports training.
    "training": frozenset({"core", "agents", "store", "graphs", "training"}),
    # The app (APP_MODULES: the CLI, the web viewer) wraps everything; nothing imports it.
    "app": frozenset({"core", "agents", "store", "graphs", "training", "app"}),
}

# Imports that break the rule today: (importing module, imported module) -> why, and the fix.
# Remove an entry once its import is gone (test_allowed_violations_still_exist insists).
ALLOWED_VIOLATIONS: dict[tuple[str, str], str] = {}

_AREAS = ("agents", "graphs", "store", "training")

# The app layer: the modules in teachloop/ that wrap the areas for a user (commands, the web
# viewer, which reads the store and draws training's plots). Everything else in teachloop/ is the
# shared core. A new engine that composes areas (like the loop) goes in training/, not here; a
# module the areas share must stay free of them.
APP_MODULES = ("teachloop.cli", "teachloop.view")


def layer_of(module: str) -> str | None:
    """The layer of a teachloop module; None for anything outside teachloop."""
    parts = module.split(".")
    if parts[0] != "teachloop":
        return None
    if len(parts) > 1 and parts[1] in _AREAS:
        return parts[1]
    if any(module == app or module.startswith(app + ".") for app in APP_MODULES):
        return "app"
    return "core"


def _package_dirs() -> dict[str, str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-dir"]


def _lazy_names() -> dict[str, str]:
    """teachloop/__init__.py's ``_LAZY``: name -> the module it is imported from on first use."""
    tree = ast.parse((ROOT / "teachloop" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError("teachloop/__init__.py has no _LAZY")


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    path: str
    line: int
    name: str | None = None  # the name of ``from target import name``, where one is imported


def source_modules() -> Iterator[tuple[str, Path, bool]]:
    """(module name, file, is a package's __init__) for every teachloop source file."""
    for package, directory in sorted(_package_dirs().items()):
        base = ROOT / directory
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield ".".join([package, *parts]), path, path.name == "__init__.py"


def imports_in(
    source: str, module: str, is_package: bool, lazy: dict[str, str], path: str = "<string>"
) -> list[Import]:
    """Every teachloop import in ``source``, at any depth, resolved to absolute module names.

    ``from teachloop import X`` counts as an import of the module ``X`` comes from: a submodule
    (``cli``), a lazy name's module (``Store`` -> teachloop.store.store), else teachloop itself.
    """
    found: list[Import] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(module, alias.name, path, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                resolved = target
                if target == "teachloop" or (node.level and not node.module):
                    if target == "teachloop" and alias.name in lazy:
                        resolved = lazy[alias.name]
                    elif layer_of(f"{target}.{alias.name}") != layer_of(target):
                        resolved = f"{target}.{alias.name}"  # a submodule in another layer
                found.append(Import(module, resolved, path, node.lineno, alias.name))
    return [i for i in found if layer_of(i.target) is not None]


def _is_lazy_name(imp: Import, lazy: dict[str, str]) -> bool:
    """teachloop/__init__.py names ``run_lessons``, ``Store``, ... for type checkers only and
    imports them on first use: the package's front door, not a dependency of the core."""
    return imp.importer == "teachloop" and imp.name is not None and lazy.get(imp.name) == imp.target


def all_imports() -> list[Import]:
    lazy = _lazy_names()
    found = []
    for module, path, is_package in source_modules():
        source = path.read_text(encoding="utf-8")
        rel = str(path.relative_to(ROOT))
        found += [
            i
            for i in imports_in(source, module, is_package, lazy, rel)
            if not _is_lazy_name(i, lazy)
        ]
    return found


def violations() -> list[Import]:
    out = []
    for imp in all_imports():
        src, dst = layer_of(imp.importer), layer_of(imp.target)
        assert src is not None and dst is not None
        if dst not in MAY_IMPORT[src]:
            out.append(imp)
    return out


# --- the rule -----------------------------------------------------------------------------------


def test_every_layer_imports_only_what_it_may() -> None:
    unexplained = [i for i in violations() if (i.importer, i.target) not in ALLOWED_VIOLATIONS]
    lines = dict.fromkeys(  # one line per statement, however many names it imports
        f"  {i.path}:{i.line}: {i.importer} imports {i.target}: "
        f"{layer_of(i.importer)} may not import {layer_of(i.target)}"
        for i in unexplained
    )
    assert not lines, (
        "imports against the layering rule (move the import; or move a module that composes "
        "lessons and training to training/; or allow-list it with the reason in "
        "ALLOWED_VIOLATIONS):\n" + "\n".join(lines)
    )


def test_allowed_violations_still_exist() -> None:
    present = {(i.importer, i.target) for i in violations()}
    stale = sorted(set(ALLOWED_VIOLATIONS) - present)
    assert not stale, f"fixed, so remove from ALLOWED_VIOLATIONS: {stale}"


def test_every_package_has_a_layer() -> None:
    # A new folder mapped into teachloop needs its place in MAY_IMPORT (and in CONTRIBUTING's
    # flow), not a silent default.
    expected = {"teachloop", *(f"teachloop.{a}" for a in _AREAS)}
    assert set(_package_dirs()) == expected


def test_the_scan_sees_every_area() -> None:
    modules = {m for m, _, _ in source_modules()}
    assert {"teachloop.cli", "teachloop.training.loop", "teachloop.domains.base"} <= modules
    assert {layer_of(m) for m in modules} == set(MAY_IMPORT)
    assert "teachloop.agents.backends.base" in modules  # nested packages too
    assert not any(m.startswith("teachloop.teachloop") for m in modules)


def test_test_modules_import_no_other_test_module() -> None:
    """A helper two test modules need lives in conftest.py or a support module (helpers.py,
    fake_openai.py, ...): importing a test module runs its collection-time code and ties one
    test file's edits to another's."""
    found = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            found += [f"  {path.name}:{node.lineno}: {n}" for n in names if n.startswith("test_")]
    assert not found, "test modules importing test modules:\n" + "\n".join(found)


# --- the import parser --------------------------------------------------------------------------


def _targets(source: str, module: str = "teachloop.graphs.x", is_package: bool = False):
    lazy = {"Store": "teachloop.store.store"}
    return [(i.target, i.line) for i in imports_in(source, module, is_package, lazy)]


def test_imports_inside_functions_and_type_checking_count() -> None:
    source = (
        "import json\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from teachloop.training.pairs import build\n"
        "def f():\n"
        "    import teachloop.store.store as s\n"
        "    class C:\n"
        "        def g(self):\n"
        "            from teachloop.agents import teacher\n"
    )
    assert _targets(source) == [
        ("teachloop.training.pairs", 4),
        ("teachloop.store.store", 6),
        ("teachloop.agents", 9),
    ]


def test_relative_and_package_imports_resolve() -> None:
    assert _targets("from . import lesson\nfrom .runner import x\nfrom .. import config\n") == [
        ("teachloop.graphs", 1),
        ("teachloop.graphs.runner", 2),
        ("teachloop", 3),
    ]
    assert _targets("from .base import B\n", "teachloop.agents.backends", is_package=True) == [
        ("teachloop.agents.backends.base", 1)
    ]
    # From the package: a submodule in another layer, a lazy name, or the core.
    source = "from teachloop import cli, Store, RunConfig, domains\n"
    assert _targets(source) == [
        ("teachloop.cli", 1),
        ("teachloop.store.store", 1),
        ("teachloop", 1),
        ("teachloop", 1),
    ]


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("teachloop", "core"),
        ("teachloop.domains.heldout", "core"),
        ("teachloop.cli", "app"),
        ("teachloop.training.loop", "training"),
        ("teachloop.training.experiment", "training"),
        ("teachloop.view.web", "app"),
        ("teachloop.agents.backends.base", "agents"),
        ("teachloop.training.jobs", "training"),
        ("json", None),
    ],
)
def test_layer_of(module: str, layer: str | None) -> None:
    assert layer_of(module) == layer
