"""The Lightning callback that hands the tracking process the epochs that go to MLflow."""

from __future__ import annotations

import pytorch_lightning as pl

from .process import TrackingProcess
from .runs import is_logged


class MLflowEpochLogger(pl.Callback):
    """Lightning callback: sends the tracking process the rows of the epochs that go to
    MLflow (every ``every``-th and the first; pickling the others cost about 1 ms an epoch)."""

    def __init__(self, tracking: TrackingProcess, every: int):
        self.tracking, self.every, self.sent = tracking, every, 0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._send(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._send(pl_module)  # the last epoch's row is added after the callbacks ran

    def _send(self, pl_module) -> None:
        for row in pl_module.history[self.sent:]:
            if is_logged(int(row["epoch"][0]), self.every):
                self.tracking.log_epoch(row)
        self.sent = len(pl_module.history)
