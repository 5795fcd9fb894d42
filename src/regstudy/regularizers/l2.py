"""Ridge (Keras convention, no 1/2): ``lam * sum_l layer_scale[l] * sum w_l^2``, a penalty in the loss.

Under plain SGD it equals ``SGD(weight_decay=2 * lam)``; under Adam it does not (the
penalty's gradient is rescaled per weight): compare :mod:`.weight_decay`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Kind, Layers, PenaltyTarget, Phase, Regularizer, selected, sum_per_member, total

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class L2Config(PenaltyTarget):
    pass


def l2_penalty(tensors: list[list[Tensor]], coef: Tensor) -> Tensor:
    """``sum_l coef[:, l] * sum w_l^2``, ``(K,)``."""
    return total(coef[:, l] * sum_per_member(ts, lambda t: t.square()) for l, ts in enumerate(tensors) if ts)


class L2(Regularizer):
    name = "l2"
    config = L2Config
    strength_key = "lam"
    kind = Kind.PENALTY
    default_phase = Phase.WEIGHT_PENALTY
    layers = Layers.ALL
    acts_on = "kernels (biases too with bias: true)"

    def penalty(self, reg, net, hidden):
        c = reg.cfg[self.name]
        return l2_penalty(selected(net, c.kernel, c.bias), reg.coefs[self.name])

    def hand_gradient(self, t, g):
        return g * (2.0 * t)
