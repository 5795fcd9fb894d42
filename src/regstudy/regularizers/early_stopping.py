"""Early stopping, per member: stop when the validation loss has not fallen by more than
``min_delta`` for ``patience`` epochs, and keep the weights of the best epoch.

A stopping rule, not a penalty: the training loop reads ``Regularization.patience``,
``min_delta`` and ``warmup_drop`` after each epoch's evaluation. Patience counts only once
the best validation loss is ``warmup_drop`` (a fraction) below its value after the first
epoch, so a member on the initial plateau is never stopped. A larger patience is weaker.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Kind, Phase, Regularizer, finite


@dataclass
class EarlyStoppingConfig:
    patience: int = 10
    min_delta: float = 0.0
    warmup_drop: float = 0.0


class EarlyStopping(Regularizer):
    name = "early_stopping"
    config = EarlyStoppingConfig
    strength_key = "patience"
    kind = Kind.STOPPING_RULE
    default_phase = Phase.EPOCH_END
    acts_on = "the number of epochs and the weights kept"
    strength_allowed = "a whole number of epochs >= 0"

    def strength_ok(self, value):
        return finite(value) and value >= 0 and float(value).is_integer()

    def checks(self, cfg, n_layers):
        yield (finite(cfg.min_delta) and cfg.min_delta >= 0, "min_delta", cfg.min_delta,
               "a finite number >= 0")
        yield (finite(cfg.warmup_drop) and 0 <= cfg.warmup_drop < 1, "warmup_drop", cfg.warmup_drop,
               "a number in [0, 1)")

    def setup(self, reg, cfg, value, n_layers):
        reg.patience, reg.min_delta, reg.warmup_drop = value, float(cfg.min_delta), float(cfg.warmup_drop)
