"""Inverted dropout after every hidden layer: in training, a unit is zeroed with probability
``p`` and the kept ones are scaled by ``1 / (1 - p)``, so ``E[h_train] = h``.

Unit noise, not a penalty: it acts in the training forward pass
(:meth:`regstudy.stacked.StackedMLP.forward` reads ``Regularization.dropout_p``).
``p = 1`` is legal: the hidden layers carry nothing. Evaluation is deterministic; Monte
Carlo dropout averages ``mc_samples`` passes with dropout on.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Kind, Phase, Regularizer, finite


@dataclass
class DropoutConfig:
    p: float = 0.2
    mc_samples: int = 30


class Dropout(Regularizer):
    name = "dropout"
    config = DropoutConfig
    strength_key = "p"
    kind = Kind.UNIT_NOISE
    default_phase = Phase.FORWARD
    acts_on = "the hidden units in the training forward pass"
    strength_allowed = "a number in [0, 1]"

    def strength_ok(self, value):
        return finite(value) and 0.0 <= value <= 1.0

    def checks(self, cfg, n_layers):
        yield cfg.mc_samples >= 1, "mc_samples", cfg.mc_samples, "an integer >= 1"

    def setup(self, reg, cfg, value, n_layers):
        reg.dropout_p = value
