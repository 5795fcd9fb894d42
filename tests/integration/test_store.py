"""Jobs that start at once on a fresh SQLite store create it once, whoever is first: the
DVC stages no longer prepare the store before fanning out. A project's jobs log to its
own store (a DVC temporary workspace: to the project it copies), and a store copied with
its project is refused."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from regstudy.paths import artifact_root, tracking_uri
from regstudy.preflight import CopiedStoreError, check_own_store
from regstudy.stages.train import compose_job
from regstudy.tracking.store import prepare_from_config, prepare_store


def _prepare(uri: str, root: str, out) -> None:
    try:
        out.put(prepare_store(uri, "regstudy", Path(root)))
    except Exception as e:  # noqa: BLE001 - reported to the test
        out.put(f"error: {type(e).__name__}: {e}")


def test_four_processes_creating_a_fresh_store_at_once_get_one_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = multiprocessing.get_context("fork")  # as the warm server forks its jobs
    out = ctx.Queue()
    procs = [ctx.Process(target=_prepare, args=(uri, str(tmp_path / "mlartifacts"), out)) for _ in range(4)]
    for p in procs:
        p.start()
    ids = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    assert len(set(ids)) == 1 and not ids[0].startswith("error"), ids
    experiments = MlflowClient(uri).search_experiments()
    assert [e.name for e in experiments if e.name != "Default"] == ["regstudy"]


# --- which store a project's jobs use ---


def test_a_dvc_temporary_workspace_logs_to_the_store_of_the_project_it_copies(tmp_path):
    workspace = tmp_path / "study" / ".dvc" / "tmp" / "exps" / "tmpk2j4x"
    cfg = compose_job([f"paths.root={workspace}"])
    assert tracking_uri(cfg) == f"sqlite:///{tmp_path / 'study' / 'mlflow.db'}"
    assert artifact_root(cfg) == tmp_path / "study" / "mlartifacts"
    cfg = compose_job([f"paths.root={tmp_path / 'study'}"])
    assert tracking_uri(cfg) == f"sqlite:///{tmp_path / 'study' / 'mlflow.db'}"


def test_a_store_copied_with_its_project_is_refused_naming_both(tmp_path):
    original, copy = tmp_path / "original", tmp_path / "copy"
    prepare_from_config(compose_job([f"paths.root={original}"]))
    shutil.copytree(original, copy)
    cfg = compose_job([f"paths.root={copy}"])
    for check in (check_own_store, prepare_from_config):
        with pytest.raises(CopiedStoreError) as info:
            check(cfg)
        assert str(copy / "mlflow.db") in str(info.value) and str(original / "mlartifacts") in str(info.value)
    check_own_store(compose_job([f"paths.root={original}"]))  # the original's own store
    check_own_store(compose_job([f"paths.root={copy}", f"logger.tracking_uri=sqlite:///{copy / 'mlflow.db'}"]))


def test_preflight_imports_nothing_of_tracking():
    """Dependencies point one way: tracking uses preflight and paths, never the other way
    round, not even inside a function."""
    import ast

    import regstudy.paths
    import regstudy.preflight

    for module in (regstudy.preflight, regstudy.paths):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        imported += [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
        assert imported and not [m for m in imported if "tracking" in m.split(".")], (module.__name__, imported)
    code = "import sys, regstudy.preflight; print(sorted(m for m in sys.modules if m.startswith('regstudy.tracking')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
