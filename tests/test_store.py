"""Jobs that start at once on a fresh SQLite store create it once, whoever is first: the
DVC stages no longer prepare the store before fanning out."""

from __future__ import annotations

import multiprocessing

from mlflow.tracking import MlflowClient

from regstudy.tracking import prepare_store


def _prepare(uri: str, root: str, out) -> None:
    try:
        out.put(prepare_store(uri, "regstudy", __import__("pathlib").Path(root)))
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
