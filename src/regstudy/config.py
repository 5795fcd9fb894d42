"""Structured-config schemas and their validation.

Types are checked by OmegaConf when Hydra composes the config (the schemas are
registered in Hydra's ConfigStore and sit first in ``conf/train.yaml``'s defaults).
Ranges and cross-field rules are checked by :func:`validate`, which runs before any
data is read, any file is written or any MLflow run is opened.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError
from .kernels import ACCELERATORS, COMPUTE_PATHS  # how a job computes: its path and its device
from .data import TASK as TASKS  # the task of each dataset, defined with the datasets
from .regularizers import REGISTRY, regularizer
from .regularizers.base import finite as _finite



# --- regularizers: one schema per family (regstudy.regularizers), one file per family in conf/regularizer/ ---

# A field per registered regularizer, in the registry's order; its schema is the regularizer's config.
RegularizerSet = make_dataclass(
    "RegularizerSet", [(name, Optional[r.config], field(default=None)) for name, r in REGISTRY.items()])
RegularizerSet.__doc__ = "The regularizers of a model: any subset, selected as a list in Hydra."
RegularizerSet.__module__ = __name__

# --- the rest of a train job ---


@dataclass
class DataConfig:
    """A built-in dataset (its name, an ``.npz`` path) or your own CSV file (a ``.csv``
    path and its ``target`` column). ``task`` null: the data file's (inferred for a CSV)."""

    name: str = "signal"
    task: Optional[str] = "regression"  # regression | classification | null
    path: Optional[str] = "data/signal.npz"
    batch_size: int = 32
    target: Optional[str] = None  # CSV files: the target column
    val_fraction: float = 0.2  # CSV files: rows per split (a seed draws the split)
    test_fraction: float = 0.2


@dataclass
class InitConfig:
    scheme: str = "uniform"  # uniform | normal | xavier_uniform | kaiming_uniform
    scale: float = 0.1  # bound of uniform(-scale, scale), std of normal
    bias: str = "same"  # same (as kernels) | zeros
    # After initialization, every kernel and bias entry moved this many ulps up
    # (torch.nextafter towards +inf): do the verdicts hang on rounding? 0: off
    perturb_ulps: int = 0


@dataclass
class ModelConfig:
    hidden: list[int] = field(default_factory=lambda: [64, 64, 64])
    activation: str = "leaky_relu"
    negative_slope: float = 0.01
    output_activation: str = "identity"
    norm: str = "none"  # none | batch | layer
    init: InitConfig = field(default_factory=InitConfig)


@dataclass
class MembersConfig:
    """The grid of members one job trains as one stacked model: strengths × seeds."""

    sweep: str = "none"  # the regularizer whose strength varies, or none
    strengths: list[float] = field(default_factory=lambda: [0.0])
    seeds: list[int] = field(default_factory=lambda: [0])
    # One strength instead of the list: what a search sets (Optuna proposes scalars).
    strength: Optional[float] = None


def member_strengths(members) -> list[float]:
    """The strengths of a job's members: ``members.strength`` if set, else ``strengths``."""
    return [float(members.strength)] if members.strength is not None else list(members.strengths)


@dataclass
class MetricsConfig:
    # Relative, so that shrinking is not pruning: a kernel entry counts as near zero if
    # w == 0 or |w| < zero_threshold * rms of its layer's kernel (of that member)
    zero_threshold: float = 1e-2
    # A hidden unit is alive if its output range over the training split exceeds this
    # times the largest range in its layer; 0: alive unless its output is constant
    alive_threshold: float = 0.0
    grid_size: int = 200  # points of the 1-D plotting grid (signal)
    grid_size_2d: int = 60  # points per axis of the 2-D plotting grid (moons)


# Per-epoch curves of every member (results/.../curves.csv); the test split is
# evaluated only once, at the end.
CURVE_METRICS = ("train_loss", "val_loss", "train_metric", "val_metric", "penalty", "weight_norm",
                 "near_zero_fraction", "exact_zero_fraction", "alive_neurons", "removed_neurons")
# Per-layer curves (results/.../layers.csv), logged to MLflow as <name>/layer_<l>.
LAYER_CURVE_METRICS = ("weight_norm", "effective_lr")


@dataclass
class LoggerConfig:
    enabled: bool = True
    tracking_uri: Optional[str] = None  # None: sqlite store mlflow.db at the project root
    experiment_name: str = "regstudy"
    log_figures: bool = True
    # logged points buffered per MLflow write (a write costs ~15 ms a run); null: one
    # write per run at the job's end (no live curves, fewest writes)
    flush_every: Optional[int] = 10
    max_points_per_curve: int = 25  # log every ceil(max_epochs / this)-th epoch to MLflow
    # The per-epoch curves that go to MLflow (each point is a row of its store);
    # results/ keeps them all (CURVE_METRICS, LAYER_CURVE_METRICS).
    epoch_metrics: list[str] = field(default_factory=lambda: list(CURVE_METRICS))
    layer_metrics: list[str] = field(default_factory=lambda: list(LAYER_CURVE_METRICS))
    background_finish: bool = False  # return before the tracking process ends the runs
    parent_run_id: Optional[str] = None  # nest the job's parent run under this run (a search's)


@dataclass
class PathsConfig:
    root: Optional[str] = None  # None: the current working directory
    results: Optional[str] = None  # None: Hydra's output dir of the job


@dataclass
class TrainerConfig:
    """Keyword arguments of ``pytorch_lightning.Trainer`` (instantiated by Hydra);
    ``accelerator`` is one of :data:`ACCELERATORS`, resolved to a device by the job."""

    _target_: str = "pytorch_lightning.Trainer"
    max_epochs: int = 100
    accelerator: str = "cpu"
    devices: int = 1
    logger: bool = False
    enable_checkpointing: bool = False
    enable_progress_bar: bool = False
    enable_model_summary: bool = False
    num_sanity_val_steps: int = 0


@dataclass
class SearchConfig:
    """A batched Optuna search of ``members.sweep``'s strength (``python -m regstudy.search``)."""

    trials: int = 32
    batch: int = 8  # trials asked at once and trained as one stacked job
    low: float = 1e-5  # the strength's range
    high: float = 1.0
    log: bool = True  # log-uniform (low > 0)
    sampler_seed: int = 0  # TPE's
    storage: Optional[str] = None  # None: optuna.db beside the MLflow store's mlflow.db (or a database URI)
    study_name: Optional[str] = None  # None: <family>-<data.name>


@dataclass
class TrainConfig:
    family: str = "custom"
    threads: int = 1
    compute: str = "auto"  # one of COMPUTE_PATHS
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    regularizer: RegularizerSet = field(default_factory=RegularizerSet)
    members: MembersConfig = field(default_factory=MembersConfig)
    optim: Any = None  # instantiated with hydra.utils.instantiate (partial)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    search: Optional[SearchConfig] = None  # set by conf/search.yaml (python -m regstudy.search)


def register_configs() -> None:
    """Register the schema ``train_schema`` with Hydra's ConfigStore, once per process
    (each registration converts the dataclasses anew: 20 ms a job)."""
    store = ConfigStore.instance()
    if "train_schema.yaml" not in store.repo:
        store.store(name="train_schema", node=TrainConfig)


# --- validation of ranges and cross-field rules ---

ACTIVATIONS = ("identity", "relu", "leaky_relu", "tanh", "sigmoid", "gelu", "elu")
OPTIMIZERS = ("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD")


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def check_strength(name: str, key: str, value: Any) -> None:
    """Range of one regularizer's strength (the value under its ``strength_key``)."""
    r = regularizer(name)
    _check(r.strength_ok(value), key, value, r.strength_allowed)


def _validate_regularizers(reg: DictConfig, n_layers: int) -> None:
    for name, sub in reg.items():
        if sub is None:
            continue
        r, base = regularizer(name), f"regularizer.{name}"
        check_strength(name, f"{base}.{r.strength_key}", sub[r.strength_key])
        for ok, key, value, allowed in r.checks(sub, n_layers):
            _check(ok, f"{base}.{key}", value, allowed)


def validate_search(cfg) -> None:
    """The search's own keys; raises ConfigError naming the key, its value and the rule."""
    s = cfg.search
    if cfg.members.sweep == "none":
        raise ConfigError("members.sweep", "none", "a regularizer whose strength to search "
                          "(choose a family: experiment=l2, ...)")
    if s.trials < 1:
        raise ConfigError("search.trials", s.trials, "an integer >= 1")
    if s.batch < 1:
        raise ConfigError("search.batch", s.batch, "an integer >= 1")
    if not (0 <= s.low < s.high):
        raise ConfigError("search.low", s.low, f"0 <= low < high (search.high={s.high})")
    if s.log and s.low <= 0:
        raise ConfigError("search.low", s.low, "> 0 with search.log=true (a log-uniform range)")
    from .paths import storage_url

    storage_url(cfg)  # a server's study needs its database URI


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value out of range. Touches no file."""
    d = cfg.data
    _check(d.task in (None, "regression", "classification"), "data.task", d.task,
           "regression, classification or null (the data file's; inferred for a CSV)")
    _check(bool(d.path), "data.path", d.path, "a data file: a .csv of your own or a dataset's .npz")
    if str(d.path).endswith(".csv"):
        _check(bool(d.target), "data.target", d.target, "the name of the target column of the CSV file")
        for key in ("val_fraction", "test_fraction"):
            _check(_finite(d[key]) and 0 < d[key] < 1, f"data.{key}", d[key], "a number in (0, 1)")
        _check(d.val_fraction + d.test_fraction < 1, "data.test_fraction", d.test_fraction,
               f"less than 1 - data.val_fraction = {1 - d.val_fraction:g} (rows must remain to train)")
    elif d.name in TASKS:
        _check(d.task in (None, TASKS[d.name]), "data.task", d.task, f"{TASKS[d.name]!r} for data.name={d.name}")
    else:
        _check(str(d.path).endswith(".npz"), "data.path", d.path,
               f"a .csv file (with data.target), or the .npz of a dataset; built-in names: {sorted(TASKS)}")
    _check(d.batch_size >= 1, "data.batch_size", d.batch_size, "an integer >= 1")
    _check(cfg.threads >= 1, "threads", cfg.threads, "an integer >= 1")

    m = cfg.model
    _check(len(m.hidden) >= 1 and all(h >= 1 for h in m.hidden), "model.hidden", list(m.hidden),
           "a non-empty list of positive widths")
    _check(m.activation in ACTIVATIONS, "model.activation", m.activation, f"one of {ACTIVATIONS}")
    _check(m.output_activation in ACTIVATIONS, "model.output_activation", m.output_activation,
           f"one of {ACTIVATIONS}")
    _check(m.norm in ("none", "batch", "layer"), "model.norm", m.norm, "none, batch or layer")
    _check(m.init.scheme in ("uniform", "normal", "xavier_uniform", "kaiming_uniform"),
           "model.init.scheme", m.init.scheme, "uniform, normal, xavier_uniform or kaiming_uniform")
    _check(_finite(m.init.scale) and m.init.scale > 0, "model.init.scale", m.init.scale,
           "a finite number > 0")
    _check(m.init.bias in ("same", "zeros"), "model.init.bias", m.init.bias, "same or zeros")
    _check(isinstance(m.init.perturb_ulps, int) and not isinstance(m.init.perturb_ulps, bool)
           and m.init.perturb_ulps >= 0, "model.init.perturb_ulps", m.init.perturb_ulps,
           "an integer >= 0 (ulps added to every initial parameter; 0: off)")

    _validate_regularizers(cfg.regularizer, n_layers=len(m.hidden) + 1)
    if cfg.data.task is not None:
        validate_task(cfg, cfg.data.task)

    if cfg.get("search") is not None:
        validate_search(cfg)
    mem = cfg.members
    chosen = [k for k, v in cfg.regularizer.items() if v is not None]
    _check(mem.sweep == "none" or mem.sweep in chosen, "members.sweep", mem.sweep,
           f"none or one of the selected regularizers {chosen}")
    strengths, seeds = member_strengths(mem), list(mem.seeds)
    _check(len(strengths) >= 1, "members.strengths", strengths, "a non-empty list")
    _check(len(seeds) >= 1, "members.seeds", seeds, "a non-empty list")
    _check(len(set(seeds)) == len(seeds), "members.seeds", seeds, "distinct seeds")
    _check(len(set(strengths)) == len(strengths), "members.strengths", strengths,
           "distinct strengths")
    _check(all(isinstance(s, int) and s >= 0 for s in seeds), "members.seeds", seeds,
           "integers >= 0")
    if mem.sweep == "none":
        _check(strengths == [0.0], "members.strengths", strengths,
               "[0.0] when members.sweep=none (nothing is swept)")
    else:
        for i, s in enumerate(strengths):
            key = "members.strength" if mem.strength is not None else f"members.strengths[{i}]"
            check_strength(mem.sweep, key, s)

    opt = cfg.optim
    _check(opt is not None and opt.get("_target_") in OPTIMIZERS, "optim._target_",
           None if opt is None else opt.get("_target_"), f"one of {OPTIMIZERS}")
    _check(_finite(opt.lr) and opt.lr > 0, "optim.lr", opt.lr, "a finite number > 0")
    _check(cfg.trainer.max_epochs >= 1, "trainer.max_epochs", cfg.trainer.max_epochs,
           "an integer >= 1")
    _check(cfg.get("compute", "auto") in COMPUTE_PATHS, "compute", cfg.get("compute"),
           f"one of {COMPUTE_PATHS}: auto (exact where its C kernels run, else torch), torch, exact")
    _check(cfg.trainer.accelerator in ACCELERATORS, "trainer.accelerator", cfg.trainer.accelerator,
           f"one of {ACCELERATORS}")
    _check(cfg.trainer.devices == 1, "trainer.devices", cfg.trainer.devices,
           "1 (one device: a job's members train as one stacked model)")
    _check(_finite(cfg.metrics.zero_threshold) and cfg.metrics.zero_threshold > 0, "metrics.zero_threshold",
           cfg.metrics.zero_threshold, "a finite number > 0 (a fraction of each layer's rms)")
    _check(_finite(cfg.metrics.alive_threshold) and 0 <= cfg.metrics.alive_threshold < 1,
           "metrics.alive_threshold", cfg.metrics.alive_threshold,
           "a number in [0, 1) (a fraction of the layer's largest output range)")
    for key in ("grid_size", "grid_size_2d"):
        _check(cfg.metrics[key] >= 2, f"metrics.{key}", cfg.metrics[key], "an integer >= 2")
    _check(cfg.logger.flush_every is None or cfg.logger.flush_every >= 1, "logger.flush_every",
           cfg.logger.flush_every, "an integer >= 1, or null (write at the job's end)")
    _check(cfg.logger.max_points_per_curve >= 1, "logger.max_points_per_curve",
           cfg.logger.max_points_per_curve, "an integer >= 1")
    for key, allowed in (("epoch_metrics", CURVE_METRICS), ("layer_metrics", LAYER_CURVE_METRICS)):
        names = list(cfg.logger.get(key) or [])
        for i, name in enumerate(names):
            _check(name in allowed, f"logger.{key}[{i}]", name, f"one of {allowed}")


def validate_task(cfg: DictConfig, task: str) -> None:
    """What depends on the task, checked once it is known (a CSV's may be inferred)."""
    if task == "classification":
        _check(cfg.model.output_activation == "identity", "model.output_activation",
               cfg.model.output_activation, "'identity' for classification (the loss takes logits)")
    for name, sub in cfg.regularizer.items():
        if sub is not None:
            tasks = regularizer(name).tasks
            _check(task in tasks, "regularizer", name,
                   f"{name} only for {' or '.join(tasks)} (data.name={cfg.data.name} is {task})")


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)
