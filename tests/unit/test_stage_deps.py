"""The train stages' code deps in dvc.yaml cover every module a train stage imports, and
nothing a train stage does not import: an edit of the server, the UI, the search or the
report re-runs no training, and a module added to training without its dep fails here.

The import graph is grimp's (import-linter's), the same graph `make lint` checks: every
import of every module, those inside functions too. A package (``data``, ``tracking``,
``regularizers``) is a dep as a whole folder, since ``tracking`` loads its modules on
first use."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def stage_code_deps(stage: str) -> set[str]:
    """The ``src/`` deps of a stage of dvc.yaml (a foreach stage's template)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {d for d in stages[stage]["do"]["deps"] if d.startswith("src/")}


def module_file(module: str) -> str:
    """The file of ``module`` under src/, relative to the project."""
    path = SRC / Path(*module.split("."))
    return str((path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).relative_to(ROOT))


def imported_by(entry: str) -> set[str]:
    graph = grimp.build_graph("regstudy", "regstudy_report", exclude_type_checking_imports=True)
    return graph.find_upstream_modules(entry) | {entry}


def covered(path: str, deps: set[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", ["train", "control", "train_csv"])
def test_a_train_stage_depends_on_every_module_it_imports(stage):
    deps = stage_code_deps(stage)
    missing = sorted(module_file(m) for m in imported_by("regstudy.stages.train") if not covered(module_file(m), deps))
    assert not missing, f"dvc.yaml's {stage} stage imports these without a dep on them: {missing}"
    assert "src/regstudy/_products.c" in deps  # the compiled products' source


@pytest.mark.parametrize("stage", ["train", "control", "train_csv"])
def test_a_train_stage_depends_on_nothing_it_does_not_import(stage):
    deps = stage_code_deps(stage)
    used = {module_file(m) for m in imported_by("regstudy.stages.train")}
    unused = sorted(d for d in deps if d.endswith(".py") and d not in used)
    assert not unused, f"dvc.yaml's {stage} stage depends on code it does not import: {unused}"
    for module in ("regstudy.server", "regstudy.ui", "regstudy.search", "regstudy.runs", "regstudy.stages.check",
                   "regstudy_report", "regstudy_report.stats"):
        assert not covered(module_file(module), deps), module
