"""Activity regularizer: ``lam * sum_l layer_scale[l] * sum_{b,j} |h_l[b, j]| / B`` (``h^2`` with
``norm: l2``), a penalty in the loss on the hidden layers' outputs ``h`` (after activation)
of a batch of ``B`` examples.

Divided by the batch size as in Keras, so that its weight against the kernel penalties
does not depend on ``B``. It is added to the loss before the weight penalties.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from .base import Kind, Layers, Phase, Regularizer, total

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class ActivityConfig:
    """``layer_scale`` has one entry per hidden layer."""

    lam: float = 1e-4
    norm: str = "l1"  # l1 | l2
    layer_scale: Optional[list[float]] = None


def activity_penalty(hidden: list[Tensor], coef: Tensor, norm: str) -> Tensor:
    """``sum_l coef[:, l] * sum_{b,j} |h_l[b, j]| / B`` (``h^2`` for l2), per member ``(K,)``.

    ``hidden`` holds each hidden layer's output ``(K, B, units)``.
    """
    power = (lambda h: h.abs()) if norm == "l1" else (lambda h: h.square())
    return total(coef[:, l] * power(h).sum(2).mean(1) for l, h in enumerate(hidden))


class Activity(Regularizer):
    name = "activity"
    config = ActivityConfig
    strength_key = "lam"
    kind = Kind.PENALTY
    default_phase = Phase.HIDDEN_PENALTY
    layers = Layers.HIDDEN
    acts_on = "the hidden layers' outputs on the training batch"
    needs_hidden = True

    def checks(self, cfg, n_layers):
        yield from super().checks(cfg, n_layers)
        yield cfg.norm in ("l1", "l2"), "norm", cfg.norm, "l1 or l2"

    def penalty(self, reg, net, hidden):
        if hidden is None:  # evaluated without the hidden outputs: no term
            return None
        return activity_penalty(hidden, reg.coefs[self.name], reg.cfg[self.name].norm)
