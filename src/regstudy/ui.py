"""``make ui``: MLflow's UI over the project's store, and the address that opens it on
the study's runs table.

MLflow 3's UI opens every experiment in its GenAI view unless the address asks for the
model-training view (``workflowType=machine_learning``; the UI then remembers the
choice in the browser). The experiment itself is marked ``custom_model_development``
(``tracking.prepare_store``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .tracking.store import prepare_store


def runs_url(base: str, experiment_id: str) -> str:
    """The address of an experiment's runs table in the model-training view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m regstudy.ui", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=Path("mlflow.db"), help="the SQLite store (default mlflow.db)")
    p.add_argument("--experiment", default="regstudy")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    args = p.parse_args(argv)
    store = args.store.resolve()
    uri = f"sqlite:///{store}"
    experiment_id = prepare_store(uri, args.experiment, store.parent / "mlartifacts")
    print(f"Open {runs_url(f'http://{args.host}:{args.port}', experiment_id)}", flush=True)
    mlflow = Path(sys.executable).with_name("mlflow")
    os.execv(mlflow, [str(mlflow), "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)])


if __name__ == "__main__":
    main()
