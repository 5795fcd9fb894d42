"""What every regularizer declares, and the pieces the families share.

A regularizer is one module of this package holding one :class:`Regularizer`: its
config (a dataclass, the structured config of ``conf/regularizer/<name>.yaml``), the key
of its strength (what a sweep varies), the layers it acts on, what kind of thing it is
(:class:`Kind`) and when in a training step it acts (:class:`Phase`), its validation
rules and its operation. The registry (``regstudy.regularizers.REGISTRY``) lists them.

Notation: ``w`` ranges over the selected entries (kernels by default) of each layer;
the coefficient of layer ``l`` for member ``k`` is ``coef[k, l] = lam_k * layer_scale[l]``;
every penalty is returned per member, shape ``(K,)``, in the units of the data loss.

torch is imported inside the operations only: config validation reads the registry
before torch is imported, so that a typo is refused in a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, Optional

if TYPE_CHECKING:
    from torch import Tensor

    from ..stacked import StackedMLP
    from ..regularization import Regularization

#: One validation rule: (holds, key under ``regularizer.<name>``, value, what is allowed).
Check = tuple[bool, str, Any, str]


class Kind(str, Enum):
    """What a regularizer is."""

    PENALTY = "penalty"  # a term added to the training loss
    STEP_OPERATOR = "step operator"  # acts on the weights around the optimizer step
    INPUT_NOISE = "input noise"  # perturbs the minibatch's inputs (data augmentation)
    UNIT_NOISE = "unit noise"  # drops hidden units in the training forward pass
    TARGET_SMOOTHING = "target smoothing"  # changes the training targets
    STOPPING_RULE = "stopping rule"  # decides at which epoch a member stops and which weights it keeps


class Phase(IntEnum):
    """When in a training step a regularizer acts. The phases come in this order, and
    within a phase the regularizers act in the registry's order."""

    INPUTS = 1  # on the minibatch's inputs
    FORWARD = 2  # in the training forward pass
    TARGETS = 3  # in the data loss
    HIDDEN_PENALTY = 4  # a loss term on the hidden outputs: added first
    WEIGHT_PENALTY = 5  # a loss term on the weights: added next
    BEFORE_STEP = 6  # on the weights, before the optimizer's update
    AFTER_STEP = 7  # on the weights, after the update
    PROJECTION = 8  # on the weights, last: a constraint holds after every step
    EPOCH_END = 9  # after each epoch's evaluation


#: The phases whose regularizers add a term to the loss, and those that act on the weights.
LOSS_PHASES = (Phase.HIDDEN_PENALTY, Phase.WEIGHT_PENALTY)
STEP_PHASES = (Phase.BEFORE_STEP, Phase.AFTER_STEP, Phase.PROJECTION)


class Layers(str, Enum):
    """Which layers a regularizer has a coefficient for (its ``layer_scale`` entries)."""

    ALL = "all"  # every linear layer, the output layer last
    HIDDEN = "hidden"  # the hidden layers only
    NONE = "none"  # not per layer: the inputs, the units, the targets or the whole run


@dataclass
class PenaltyTarget:
    """Which parameters a weight regularizer touches: kernels and/or biases, with a per-layer scale.

    The coefficient of layer ``l`` is ``lam * layer_scale[l]`` (``null`` = 1 for every
    layer), and 0 for the output layer with ``output_layer: false``. Layers count the
    hidden linear layers first, the output layer last.
    """

    lam: float = 1e-4
    kernel: bool = True
    bias: bool = False
    layer_scale: Optional[list[float]] = None
    output_layer: bool = True  # false: the output layer's coefficient is 0


class UnknownRegularizer(LookupError):
    """A regularizer name the registry does not hold."""

    def __init__(self, name: str, registered: Iterable[str]):
        self.name = name
        super().__init__(f"unknown regularizer {name!r}: registered are {sorted(registered)} "
                         "(a regularizer is a module of src/regstudy/regularizers/ listed in its REGISTRY)")


def finite(x: Any) -> bool:
    """A real number (not a bool), finite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class Regularizer:
    """One regularizer: what it is, its config and its operation.

    A subclass sets the class attributes below and implements the operation of its
    phase: :meth:`penalty` (loss phases), :meth:`step_` (step phases), or
    :meth:`setup` alone (the training loop reads what it stores on the
    :class:`~regstudy.regularization.Regularization`).
    """

    name: ClassVar[str]  # its key under ``regularizer.`` and its conf/regularizer/<name>.yaml
    config: ClassVar[type]  # its structured config (a dataclass)
    strength_key: ClassVar[str]  # the config key a sweep varies
    kind: ClassVar[Kind]
    default_phase: ClassVar[Phase]
    layers: ClassVar[Layers] = Layers.NONE
    acts_on: ClassVar[str]  # in words: which tensors it touches
    # With ``proximal: true`` in its config it acts after the step (an exact proximal
    # map of its penalty) instead of in the loss.
    has_proximal_step: ClassVar[bool] = False
    needs_hidden: ClassVar[bool] = False  # its penalty reads the hidden layers' outputs
    tasks: ClassVar[tuple[str, ...]] = ("regression", "classification")
    # False: no conf/experiment sweeps it and params.yaml has no grid for it (on purpose)
    in_study: ClassVar[bool] = True
    strength_allowed: ClassVar[str] = "a finite number >= 0"

    def __repr__(self) -> str:
        return f"<regularizer {self.name}: {self.kind.value}>"

    # --- validation ---

    def strength_ok(self, value: Any) -> bool:
        """Whether ``value`` is a legal strength (:attr:`strength_allowed` says which are)."""
        return finite(value) and value >= 0.0

    def checks(self, cfg: Any, n_layers: int) -> Iterator[Check]:
        """The rules of its config beyond the types and the strength, in order; lazily, so
        a rule may assume the ones before it held."""
        scales = getattr(cfg, "layer_scale", None)
        if scales is None:
            return
        scales = list(scales)
        if self.layers is Layers.HIDDEN:
            yield (len(scales) == n_layers - 1 and all(finite(s) and s > 0 for s in scales), "layer_scale",
                   scales, f"null or a list of {n_layers - 1} finite numbers > 0 (one per hidden layer)")
        else:
            yield (len(scales) == n_layers and all(finite(s) and s >= 0 for s in scales), "layer_scale",
                   scales, f"null or a list of {n_layers} finite numbers >= 0 (one per layer, output last)")

    # --- training ---

    def phase(self, cfg: Any) -> Phase:
        """When it acts, with this config."""
        if self.has_proximal_step and cfg.proximal:
            return Phase.AFTER_STEP
        return self.default_phase

    def setup(self, reg: Regularization, cfg: Any, value: Tensor, n_layers: int) -> None:
        """Store what it needs on ``reg``; ``value`` is each member's strength ``(K,)``.
        By default: its per-layer coefficients ``reg.coefs[name]``, ``(K, layers)``."""
        reg.coefs[self.name] = layer_coefficients(cfg, value, n_layers, self.layers)

    def penalty(self, reg: Regularization, net: StackedMLP, hidden: list[Tensor] | None) -> Tensor | None:
        """Its loss term per member ``(K,)``, or None where it has nothing to add."""
        raise NotImplementedError(f"regularizer {self.name!r} acts in the loss but defines no penalty()")

    def hand_gradient(self, t: Tensor, g: Tensor) -> Tensor | None:
        """``d penalty / d t`` given ``g = weight * coef`` shaped to ``t``, with autograd's
        own operations (so its bits), or None: autograd differentiates the penalty."""
        return None

    def step_(self, reg: Regularization, net: StackedMLP, lr: float) -> None:
        """Act on the weights in place (a step phase), with learning rate ``lr``."""
        raise NotImplementedError(f"regularizer {self.name!r} acts on the weights but defines no step_()")


# --- shared pieces of the weight regularizers (tensors in, tensors out) ---


def layer_coefficients(cfg: Any, value: Tensor, n_layers: int, layers: Layers) -> Tensor:
    """``coef[k, l] = value[k] * layer_scale[l]`` over the layers ``layers`` names, ``(K, L)``;
    0 for the output layer with ``output_layer: false``."""
    import torch

    n = n_layers - 1 if layers is Layers.HIDDEN else n_layers
    scale = torch.ones(n) if cfg.layer_scale is None else torch.tensor(list(cfg.layer_scale), dtype=torch.float32)
    if layers is Layers.ALL and not cfg.output_layer:
        scale[-1] = 0.0
    return value[:, None] * scale[None, :]


def selected(net: StackedMLP, kernel: bool, bias: bool) -> list[list[Tensor]]:
    """Per layer, the tensors a weight regularizer touches (each ``(K, ...)``)."""
    return [[t for t, on in ((w, kernel), (b, bias)) if on]
            for w, b in zip(net.kernels, net.biases)]


def per_layer(cfg: Any, coef: Tensor, net: StackedMLP, factor: float | Tensor):
    """``(l, tensor, t)`` for each tensor ``cfg`` selects; ``t = factor * coef[:, l]`` shaped
    to it (``factor``: the learning rate, or a weight per member)."""
    for l, ts in enumerate(selected(net, cfg.kernel, cfg.bias)):
        for t in ts:
            yield l, t, (factor * coef[:, l]).view(-1, *([1] * (t.dim() - 1)))


def total(terms: Iterable[Tensor]) -> Tensor | int:
    """``t0 + t1 + ...`` in order; 0 if there are none. Python's ``sum`` would add the first
    to 0: the same value, but one more operation (and autograd node) each time."""
    terms = iter(terms)
    result = next(terms, 0)
    for t in terms:
        result = result + t
    return result


def sum_per_member(ts: list[Tensor], f: Callable[[Tensor], Tensor]) -> Tensor:
    """``sum over the tensors of sum over each member's entries of f(t)``, shape ``(K,)``."""
    return total(f(t.flatten(1)).sum(1) for t in ts)
