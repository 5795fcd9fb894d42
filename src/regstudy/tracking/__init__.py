"""MLflow tracking: a parent run per train job, a child run per member.

One concept a module:

- :mod:`~regstudy.tracking.store`: the store and its experiment (created once, under a
  lock), the warm-up, and the Hydra callback that prepares them before any job;
- :mod:`~regstudy.tracking.params`: the config as params, what each member repeats, the git commit;
- :mod:`~regstudy.tracking.runs`: :class:`JobTracker`, the job's runs from open to end;
- :mod:`~regstudy.tracking.process`: :class:`TrackingProcess`, the forked process that
  does the job's MLflow work on the second core, and its pipe;
- :mod:`~regstudy.tracking.callback`: :class:`MLflowEpochLogger`, the Lightning callback
  that sends it the logged epochs;
- :mod:`~regstudy.tracking.writer`: how the runs reach the store (in bulk, or run by run).

Dependencies point one way: these modules use :mod:`regstudy.paths`,
:mod:`regstudy.preflight` and the rest of the package, never the other way round. The
names below are loaded on first use, so that ``from regstudy.tracking.store import
PrepareStoreCallback`` (every command line) imports neither MLflow nor Lightning.
"""

from __future__ import annotations

import importlib

# name -> the module that defines it
_EXPORTS = {
    "EXPERIMENT_KIND": "store", "PrepareStoreCallback": "store", "prepare_from_config": "store",
    "prepare_store": "store", "warm_up": "store",
    "MEMBER_PARAMS": "params", "flatten": "params", "git_commit": "params", "member_params": "params",
    "LAYER_ROW_KEY": "runs", "OWNER_TAG": "runs", "JobFailed": "runs", "JobInterrupted": "runs",
    "JobTracker": "runs", "TrackingFailed": "runs", "is_logged": "runs", "logged_every": "runs",
    "CPU_LINE": "process", "TrackingProcess": "process",
    "MLflowEpochLogger": "callback",
    "ClientWriter": "writer", "DatabaseWriter": "writer", "NewRun": "writer", "RunData": "writer",
    "TESTED_MLFLOW": "writer", "writer_for": "writer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
