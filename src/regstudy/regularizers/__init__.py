"""The regularizers of the study: one module each, and the registry that lists them.

:data:`REGISTRY` is the one place the rest of the code asks about a regularizer: the
config's schema (``RegularizerSet``) and its validation, the strength a sweep varies, the
loss's penalties and the step operators around the optimizer step. Each is written
once, vectorized over the member axis, with ``coef[k, l] = lam_k * layer_scale[l]``:

- ``l1``               penalty ``lam * sum |w|`` (proximal: soft-threshold after the step)
- ``l2``               penalty ``lam * sum w^2`` (Keras convention, no 1/2)
- ``elastic_net``      penalty ``lam * (rho * sum |w| + (1 - rho) * sum w^2)`` (or proximal)
- ``weight_decay``     step operator ``w <- w - lr * lam * w``, before the step (AdamW)
- ``group_lasso``      penalty ``lam * sum_g sqrt(|g|) * ||w_g||_2``, g = a unit's inputs (or proximal)
- ``dropout``          unit noise: a hidden unit zeroed with probability p, the rest scaled by 1/(1-p)
- ``noise``            input noise ``x <- x + sigma * eps``, ``eps ~ N(0, I)``
- ``early_stopping``   stopping rule: stop after ``patience`` epochs without gain, keep the best
- ``activity``         penalty ``lam * sum |h| / B`` over the hidden outputs h of a batch
- ``max_norm``         step operator ``w_j <- w_j * min(1, c / ||w_j||)``, last after the step
- ``label_smoothing``  target smoothing: targets ``(1 - eps) * one_hot + eps / C``

A name the registry does not hold fails loudly (:class:`~.base.UnknownRegularizer`).
The package imports nothing of regstudy (and torch only inside the operations), so the
config can be validated from it; what a stack needs in training is built from it in
:mod:`regstudy.regularization`.
"""

from __future__ import annotations

from . import (
    activity,
    dropout,
    early_stopping,
    elastic_net,
    group_lasso,
    l1,
    l2,
    label_smoothing,
    max_norm,
    noise,
    weight_decay,
)
from .activity import activity_penalty
from .base import Kind, Layers, Phase, Regularizer, UnknownRegularizer
from .label_smoothing import smoothed_cross_entropy

#: Every regularizer by name. The order is the config's (``RegularizerSet``'s fields) and,
#: within a phase of a training step, the order they act in: a new one goes last.
REGISTRY: dict[str, Regularizer] = {r.name: r for r in (
    l1.L1(),
    l2.L2(),
    elastic_net.ElasticNet(),
    weight_decay.WeightDecay(),
    group_lasso.GroupLasso(),
    dropout.Dropout(),
    noise.Noise(),
    early_stopping.EarlyStopping(),
    activity.Activity(),
    max_norm.MaxNorm(),
    label_smoothing.LabelSmoothing(),
)}


def regularizer(name: str) -> Regularizer:
    """The registered regularizer ``name``; :class:`UnknownRegularizer` naming it otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownRegularizer(name, REGISTRY) from None


def not_applicable(regularizers, task: str | None) -> str | None:
    """Why a job's regularizers (the config's ``regularizer`` mapping: name -> settings or
    None) do not apply to a dataset of ``task`` (each one's ``tasks``: label smoothing needs
    classes), or None; None too while the task is not known."""
    for name, sub in regularizers.items():
        tasks = regularizer(name).tasks
        if sub is not None and task is not None and task not in tasks:
            return f"{name} applies to {' or '.join(tasks)} only"
    return None


__all__ = ["REGISTRY", "Kind", "Layers", "Phase", "Regularizer", "UnknownRegularizer",
           "activity_penalty", "not_applicable", "regularizer", "smoothed_cross_entropy"]
