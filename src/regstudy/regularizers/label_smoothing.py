"""Label smoothing (classification only): the training targets are ``(1 - eps) * one_hot(y) + eps / C``.

Target smoothing, not a penalty: only the training loss changes (the loop reads
``Regularization.label_smoothing``); the tables' losses stay plain cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Kind, Phase, Regularizer, finite

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class LabelSmoothingConfig:
    eps: float = 0.1


def smoothed_cross_entropy(logits: Tensor, y: Tensor, eps: Tensor) -> Tensor:
    """Mean cross-entropy against ``(1 - eps) * one_hot(y) + eps / C``, per member ``(K,)``.

    ``logits`` ``(K, B, C)``, ``y`` ``(K, B)``, ``eps`` ``(K,)``: equals
    ``(1 - eps) * nll(y) + eps * mean_c(-log p_c)``, as ``torch``'s ``label_smoothing``.
    """
    logp = logits.log_softmax(-1)
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(1)
    uniform = -logp.mean(-1).mean(1)
    return (1 - eps) * nll + eps * uniform


class LabelSmoothing(Regularizer):
    name = "label_smoothing"
    config = LabelSmoothingConfig
    strength_key = "eps"
    kind = Kind.TARGET_SMOOTHING
    default_phase = Phase.TARGETS
    acts_on = "the training targets"
    tasks = ("classification",)
    strength_allowed = "a number in [0, 1)"

    def strength_ok(self, value):
        return finite(value) and 0.0 <= value < 1.0

    def setup(self, reg, cfg, value, n_layers):
        reg.label_smoothing = value
