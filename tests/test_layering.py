"""The packages depend on each other in one direction only (README, "Repository layout"):

    errors  <-  config, utils, assets, locks  <-  kernels  <-  models  <-  training  <-  checkpoints_tools
    data (tokenizer, indexed datasets) <- training;  generation, scoring  <-  posttrain, evaluation,
    data_processing;  demo uses everything and nothing uses demo.

A new import that breaks the order fails here, naming the file and the import.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "megatron_infi"
CORE = {
    "megatron_infi.config",
    "megatron_infi.errors",
    "megatron_infi.utils",
    "megatron_infi.assets",
    "megatron_infi.locks",
    "megatron_infi.logs",
    "megatron_infi.plots",
}

ALLOWED: dict[str, set[str]] = {
    "megatron_infi.errors": set(),  # the bottom: every package raises these
    "megatron_infi.logs": set(),  # every entry point calls it first
    "megatron_infi.config": CORE,
    "megatron_infi.utils": CORE,
    "megatron_infi.assets": CORE,
    "megatron_infi.locks": CORE,
    "megatron_infi.plots": CORE,
    "megatron_infi.cli": {"megatron_infi.logs"},  # dispatches by module name, imports no stage
    "megatron_infi.recipes": CORE | {"megatron_infi.cli", "megatron_infi.logs"},  # runs stages as processes
    "megatron_infi.kernels": CORE,
    "megatron_infi.models": CORE | {"megatron_infi.kernels"},
    "megatron_infi.data": CORE,
    "megatron_infi.training": CORE | {"megatron_infi.kernels", "megatron_infi.models", "megatron_infi.data"},
    "megatron_infi.train": CORE | {"megatron_infi.models", "megatron_infi.training", "megatron_infi.data"},
    "megatron_infi.checkpoints_tools": CORE
    | {"megatron_infi.models", "megatron_infi.data", "megatron_infi.training"},
    "megatron_infi.scoring": CORE,
    "megatron_infi.generation": CORE,
    "megatron_infi.data_processing": CORE
    | {"megatron_infi.data", "megatron_infi.scoring", "megatron_infi.generation"},
    "megatron_infi.posttrain": CORE | {"megatron_infi.generation", "megatron_infi.scoring"},
    "megatron_infi.evaluation": CORE | {"megatron_infi.generation", "megatron_infi.scoring"},
}
TOP_LEVEL_FOLDERS = ("kernels", "data_processing", "checkpoints_tools")


def _unit(module: str) -> str:
    """megatron_infi.models.spec -> megatron_infi.models (the layer a module belongs to)."""
    return ".".join(module.split(".")[:2])


def _modules():
    """(dotted name, path) of every module, through the sub-package links (rglob does not follow them)."""
    for root, _, files in sorted(os.walk(PACKAGE, followlinks=True)):
        for name in sorted(files):
            if name.endswith(".py"):
                path = Path(root) / name
                yield ".".join(path.relative_to(REPO).with_suffix("").parts), path


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def test_every_unit_has_a_rule():
    units = {_unit(module) for module, _ in _modules()} - {"megatron_infi.__init__", "megatron_infi.demo"}
    assert units <= set(ALLOWED), sorted(units - set(ALLOWED))
    assert {
        "megatron_infi.kernels",
        "megatron_infi.data_processing",
        "megatron_infi.checkpoints_tools",
    } <= units


def test_imports_follow_the_layer_order():
    violations = []
    for module, path in _modules():
        unit = _unit(module)
        if unit in ("megatron_infi.demo", "megatron_infi.__init__"):
            continue
        for lineno, name in _imports(path):
            if not name.startswith("megatron_infi."):
                continue
            target = _unit(name)
            if target == unit or target not in ALLOWED and target != "megatron_infi.demo":
                continue  # `from megatron_infi import x` also lists megatron_infi.x: checked as x
            if target not in ALLOWED[unit]:
                violations.append(f"{path.relative_to(REPO)}:{lineno}: {unit} imports {name}")
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("folder", TOP_LEVEL_FOLDERS)
def test_top_level_folders_have_no_import_name_of_their_own(folder):
    assert not (REPO / folder / "__init__.py").exists(), f"{folder}/__init__.py makes `{folder}` importable"
    link = PACKAGE / folder
    assert link.is_symlink() and link.resolve() == (REPO / folder).resolve()
    offenders = [
        f"{path.relative_to(REPO)}:{lineno}: import {name}"
        for root in ("megatron_infi", *TOP_LEVEL_FOLDERS, "tests", "benchmarks", "launch")
        for path in (REPO / root).rglob("*.py")
        for lineno, name in _imports(path)
        if name.split(".")[0] == folder
    ]
    assert not offenders, "\n".join(offenders)
