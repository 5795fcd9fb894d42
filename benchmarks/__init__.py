"""The benchmark suite (``python -m benchmarks.run``)."""

from __future__ import annotations

import os

from regstudy.kernels import KERNEL_ENV, pin_for

pin_for("auto", "cpu")  # before torch: the study's default compute path (exact, pinned, where it runs)

# Where the suite's own process points MLflow and Hydra (``mlflow.set_tracking_uri``
# exports the URI to the environment for subprocesses), and the kernel pin: a command
# timed as a user runs it must not inherit them (its runs would go to the suite's store;
# its jobs would compute on pinned kernels whatever their path: a regstudy command asks
# for the pin itself where its path is exact, regstudy.kernels.pin_for).
SUITE_ONLY_ENV = ("REGSTUDY_CONF", "MLFLOW_TRACKING_URI", *KERNEL_ENV)


def user_env(**extra: str) -> dict[str, str]:
    """The environment a user's command runs in: this one without ``SUITE_ONLY_ENV``."""
    return {**{k: v for k, v in os.environ.items() if k not in SUITE_ONLY_ENV}, **extra}
