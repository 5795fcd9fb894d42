"""The MLflow runs behind a results folder, found by its content:
``python -m regstudy.runs results/l2/moons [--write]``.

A job tags each of its runs with its results' digest (:func:`results.results_digest`, of
members.csv). DVC keeps no ``run.json`` in its cache, so a folder it restored has lost
that file; this command finds the runs in the store again (the project's ``mlflow.db``,
or ``MLFLOW_TRACKING_URI``) and, with ``--write``, puts ``run.json``'s links back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .results import RESULTS_DIGEST_TAG, results_digest


def find_runs(folder: Path, uri: str) -> dict:
    """``{experiment_id, parent_run_id, member_run_ids}`` of the runs that carry the
    folder's digest (the newest job's, if the same results were logged twice)."""
    from mlflow.tracking import MlflowClient

    digest = results_digest(folder)
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.{RESULTS_DIGEST_TAG} = '{digest}'", max_results=50_000,
                              order_by=["attributes.start_time DESC"]) if experiments else []
    parents = [r for r in runs if r.data.tags.get("member") is None]  # a job's parent run: no member tag
    if not parents:
        return {RESULTS_DIGEST_TAG: digest, "experiment_id": None, "parent_run_id": None, "member_run_ids": []}
    parent = parents[0]
    members = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
                      and r.data.tags.get("member") is not None), key=lambda r: int(r.data.tags["member"]))
    return {RESULTS_DIGEST_TAG: digest, "experiment_id": parent.info.experiment_id,
            "parent_run_id": parent.info.run_id, "member_run_ids": [r.info.run_id for r in members]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m regstudy.runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a job's results folder, e.g. results/l2/moons")
    parser.add_argument("--store", default=None,
                        help="tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)")
    parser.add_argument("--write", action="store_true", help="write the links into the folder's run.json")
    args = parser.parse_args(argv)
    if not (args.folder / "members.csv").is_file():
        print(f"error: {args.folder} is not a results folder (it has no members.csv)", file=sys.stderr)
        return 2
    uri = args.store or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        print(f"error: no MLflow store at {uri.removeprefix('sqlite:///')}", file=sys.stderr)
        return 2
    links = find_runs(args.folder, uri)
    if links["parent_run_id"] is None:
        print(f"error: no run in {uri} carries {args.folder}'s digest {links[RESULTS_DIGEST_TAG]}", file=sys.stderr)
        return 1
    links["tracking_uri"] = uri
    if args.write:
        path = args.folder / "run.json"
        old = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**old, **links}, indent=2, sort_keys=True) + "\n")
    print(json.dumps(links, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
