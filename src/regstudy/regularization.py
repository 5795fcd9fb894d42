"""What a stack of members needs to regularize itself in training: built from the config's
regularizers and each member's strength of the swept one, it asks the registry what each
regularizer does and when (:class:`~regstudy.regularizers.base.Phase`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from .regularizers import REGISTRY, regularizer
from .regularizers.base import LOSS_PHASES, Phase, Regularizer, per_layer, total
from .stacked import StackedMLP


@dataclass
class Regularization:
    """The regularizers of a stack, each with its per-member values.

    The regularizers that are not swept use their config value for every member. What
    the training loop reads: ``noise_sigma`` (input noise), ``dropout_p`` (unit noise),
    ``label_smoothing`` (targets), ``patience``/``min_delta``/``warmup_drop`` (stopping);
    the loss's :meth:`penalty` and the step operators :meth:`before_step_` and
    :meth:`after_step_`.
    """

    n_layers: int
    coefs: dict[str, Tensor] = field(default_factory=dict)  # name -> (K, layers): per-layer coefficients
    cfg: dict[str, SimpleNamespace] = field(default_factory=dict)  # plain values: read every step
    phases: dict[str, Phase] = field(default_factory=dict)  # name -> when it acts, in registry order
    dropout_p: Tensor | None = None  # (K,)
    noise_sigma: Tensor | None = None  # (K,)
    patience: Tensor | None = None  # (K,)
    min_delta: float = 0.0
    warmup_drop: float = 0.0
    label_smoothing: Tensor | None = None  # (K,)

    @classmethod
    def build(cls, reg_cfg: DictConfig, sweep: str, strengths: Tensor, n_layers: int):
        """``strengths``: the swept regularizer's value for each member, shape ``(K,)``."""
        self = cls(n_layers=n_layers)
        n = len(strengths)
        chosen = {name: sub for name, sub in reg_cfg.items() if sub is not None}
        for name in chosen:
            regularizer(name)  # an unregistered name fails here, naming itself
        for name, r in REGISTRY.items():  # the registry's order is the order they act in
            if name not in chosen:
                continue
            sub = chosen[name]
            value = strengths if name == sweep else torch.full((n,), float(sub[r.strength_key]))
            self.cfg[name] = SimpleNamespace(**OmegaConf.to_container(sub, resolve=True))
            self.phases[name] = r.phase(self.cfg[name])
            r.setup(self, self.cfg[name], value, n_layers)
        return self

    def to(self, device: torch.device | str) -> "Regularization":
        """Move every per-member tensor to ``device`` (in place); returns self."""
        self.coefs = {name: t.to(device) for name, t in self.coefs.items()}
        for name in ("dropout_p", "noise_sigma", "patience", "label_smoothing"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        return self

    def _acting(self, *phases: Phase) -> list[str]:
        """The regularizers acting in ``phases``, in the order they act."""
        return sorted((name for name, p in self.phases.items() if p in phases), key=self.phases.__getitem__)

    # --- penalties (in the loss) ---

    @property
    def loss_penalties(self) -> list[str]:
        """The regularizers whose penalty is in the loss, in the order it adds them: the
        hidden outputs' first, then the weights' (a proximal one acts after the step instead)."""
        return self._acting(*LOSS_PHASES)

    @property
    def has_penalty(self) -> bool:
        """Whether any regularizer adds a penalty to the loss."""
        return bool(self.loss_penalties)

    @property
    def needs_hidden(self) -> bool:
        """Whether the training loss needs the hidden layers' outputs (activity)."""
        return any(REGISTRY[name].needs_hidden for name in self.loss_penalties)

    def penalty(self, net: StackedMLP, hidden: list[Tensor] | None = None) -> Tensor:
        """The loss penalty of each member, ``(K,)`` (zero without a loss regularizer).

        ``hidden``: the hidden layers' outputs on the batch, for a penalty on them.
        """
        terms = [term for name in self.loss_penalties
                 if (term := REGISTRY[name].penalty(self, net, hidden)) is not None]
        return total(terms) if terms else torch.zeros(net.n_members, device=net.kernels[0].device)

    @property
    def gradient_by_hand(self) -> bool:
        """Whether the loss has one penalty, whose regularizer writes its gradient by hand
        (l1, l2): :meth:`add_penalty_grad_` adds it after the backward pass, and autograd
        differentiates the data loss only."""
        names = self.loss_penalties
        return len(names) == 1 and type(REGISTRY[names[0]]).hand_gradient is not Regularizer.hand_gradient

    @torch.no_grad()
    def add_penalty_grad_(self, net: StackedMLP, weight: Tensor) -> None:
        """Add ``weight[k] * d penalty_k / d w`` to the ``.grad`` of every penalized tensor.

        ``weight`` ``(K,)`` is what the backward pass sent the penalty (1, or 0 for a
        member whose loss is not finite). The operations, and so the bits, are autograd's
        own (the regularizer's ``hand_gradient``: l2's ``g * (2 * w)``, l1's ``g * sgn(w)``
        with ``g = weight * coef[:, l]``), and the sum with the data loss's gradient (two
        terms, so in either order). Autograd's graph through the penalty cost four passes
        over every weight and most of the penalty's time in a step; this is two or three.
        """
        (name,) = self.loss_penalties
        r = REGISTRY[name]
        for _, t, g in per_layer(self.cfg[name], self.coefs[name], net, weight):
            if not t.requires_grad:  # a fixed tensor (a bias before batch norm): no gradient
                continue
            grad = r.hand_gradient(t, g)
            if t.grad is None:  # a parameter the data loss does not use
                t.grad = grad
            else:
                t.grad.add_(grad)

    # --- step operators (on the weights) ---

    @torch.no_grad()
    def before_step_(self, net: StackedMLP, lr: float) -> None:
        """The operators on the pre-step weights (decoupled decay), learning rate ``lr``."""
        for name in self._acting(Phase.BEFORE_STEP):
            REGISTRY[name].step_(self, net, lr)

    @torch.no_grad()
    def after_step_(self, net: StackedMLP, lr: float) -> None:
        """The operators after the update: proximal steps, then projections (max-norm)."""
        for name in self._acting(Phase.AFTER_STEP, Phase.PROJECTION):
            REGISTRY[name].step_(self, net, lr)
