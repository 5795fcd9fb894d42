"""Decoupled weight decay (AdamW): ``w <- w - lr * coef * w`` before each optimizer step, outside the loss.

A step operator applied to the pre-step weights, exactly as ``torch.optim.AdamW`` does.
Under Adam it is far weaker than :mod:`.l2` at the same ``lam`` (the decay is ``lr * lam``
per step); under plain SGD the two coincide at ``lam_wd = 2 * lam_l2``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Kind, Layers, PenaltyTarget, Phase, Regularizer, per_layer


@dataclass
class WeightDecayConfig(PenaltyTarget):
    pass


class WeightDecay(Regularizer):
    name = "weight_decay"
    config = WeightDecayConfig
    strength_key = "lam"
    kind = Kind.STEP_OPERATOR
    default_phase = Phase.BEFORE_STEP
    layers = Layers.ALL
    acts_on = "kernels (biases too with bias: true)"

    def step_(self, reg, net, lr):
        for _, t, step in per_layer(reg.cfg[self.name], reg.coefs[self.name], net, lr):
            t.mul_(1 - step)
