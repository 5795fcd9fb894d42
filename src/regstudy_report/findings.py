"""What the study found, per dataset and family, in numbers and in words.

For each dataset and family: the strength tuned on validation, the test metric there,
and its effect against the family's **comparator**, as a paired difference over seeds
with a 95% t-interval and two tests:

- a paired t-test of "no difference" (*better* / *worse* when it rejects), and
- two one-sided tests (TOST) of "the difference lies inside the region of practical
  equivalence ±margin" (*equivalent* when it rejects),

each with Holm's correction across the dataset's findings, so that the chance of any
false *better*/*worse* on a dataset, and of any false *equivalent*, is at most alpha.
What neither test decides is *undetermined*, with the seeds that would likely decide it.

The strength is chosen on validation **without the seed it is judged on**: each seed's
test difference is taken at the strength the *other* seeds' validation metric prefers
(leave one seed out), so that the luck that made a setting look best on validation does
not also flatter its test effect (a model's validation and test scores share it). The
report shows the strength all seeds prefer, and how often the seeds chose it.

The comparator is the unregularized baseline (``none``), except for a family whose
network or training differs from the baseline's in more than its swept regularizer (its
``config.yaml``: normalization, a second regularizer, another optimizer): it is judged
against its own non-binding setting (the weakest of its grid: λ = 0, the largest c).
A family whose chosen setting *is* its comparator on every seed (λ = 0, or members
identical to it) has *no regularization selected*: there is nothing to test. Every
sentence of the report's findings is built here, from those numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from regstudy_report.settings import Settings
from regstudy_report.stats import (
    BETTER,
    EQUIVALENT,
    UNDETERMINED,
    WORSE,
    Effect,
    Interval,
    best_column,
    cross_fitted_effect,
    decide,
    detectable_effect,
    effect_text,
    estimate,
    mean_interval,
    near_alpha,
    near_ties,
    paired_difference,
    paired_effect,
    pooled_sd,
    seeds_to_decide,
    sig,
)
from regstudy_report.tables import DATASET_ORDER, Results, jobs, ordered, stronger_is_smaller, weakest_strength

BASELINE = "none"
NO_REGULARIZATION = "no regularization selected"
NOT_MEASURED = "not measured"
#: Every label a finding can carry: the four verdicts of a test, then the rows that are not tests.
LABELS = (BETTER, EQUIVALENT, WORSE, UNDETERMINED, NO_REGULARIZATION, NOT_MEASURED, "baseline")
# Keys of a job's config that do not change what is trained, or that the family sweeps.
_SAME_MODEL_KEYS = ("family", "members", "paths", "logger", "threads", "metrics")


@dataclass(frozen=True)
class Comparator:
    """Whose members a family is compared with: ``family``'s at ``strength`` (the baseline
    ``none`` at 0, or the family's own non-binding setting), and why."""

    family: str
    strength: float | None
    strength_name: str = "none"
    reason: str = ""  # why not the baseline: what differs from it

    @property
    def label(self) -> str:
        return BASELINE if self.family == BASELINE else f"{self.family} at {self.strength_name} = {sig(self.strength)}"


@dataclass
class Finding:
    dataset: str
    family: str
    strength_name: str
    strength: float | None  # the strength all seeds' validation prefers; None when none can be chosen
    metric_name: str
    margin: float  # the region of practical equivalence, ±margin, in metric units
    comparator: Comparator
    test: Interval  # test metric at each seed's chosen strength, over seeds
    baseline: Interval  # test metric of the comparator, over seeds
    effect: Interval  # paired difference (family at each seed's chosen strength - comparator) of the test metric
    diffs: pd.Series = field(repr=False)  # those paired differences, by seed
    chosen: pd.Series = field(default=None, repr=False)  # per seed, the strength the other seeds chose
    measured: Effect = field(default=None, repr=False)  # the effect with its (jackknife) standard error
    p_value: float = math.nan  # paired t-test of effect = 0, two-sided
    p_equivalence: float = math.nan  # TOST of |effect| < margin
    p_adjusted: float = math.nan  # Holm across the dataset's tests
    p_equivalence_adjusted: float = math.nan
    verdict: str = NOT_MEASURED
    borderline: str = ""  # why the verdict could flip (an adjusted p near alpha, a near tie), or ""
    seeds_to_decide: int | None = None  # undetermined rows: seeds that would likely decide them
    decided_as: str = ""  # ... and the verdict they would likely give
    near_tied: list = field(default_factory=list)  # strengths that nearly tie the best on validation (near_ties)
    note: str = ""  # what the numbers alone do not say (an early stopping that never stopped)
    text: str = ""

    @property
    def tested(self) -> bool:
        return self.verdict in (BETTER, EQUIVALENT, WORSE, UNDETERMINED)


@dataclass
class DatasetPower:
    """What one dataset's findings can detect."""

    dataset: str
    metric_name: str
    margin: float
    seeds: int  # seeds of the baseline (every family of the dataset trains the same seeds)
    tests: int  # findings tested (Holm's m)
    sd: float  # pooled standard deviation of the tested findings' paired differences
    detectable: float  # effect detected with the stated power at alpha / m
    alpha: float
    power: float
    text: str = ""


def by_seed(rows: pd.DataFrame, column: str) -> pd.Series:
    """``column`` of the ok members of ``rows``, indexed by seed (one member per seed)."""
    ok = rows["status"].to_numpy() == "ok"
    values = pd.Series(rows[column].to_numpy()[ok], index=pd.Index(rows["seed"].to_numpy()[ok], name="seed"),
                       name=column)
    return values.sort_index()


def at_strength(job: pd.DataFrame, strength) -> pd.DataFrame:
    return job[np.isclose(job["strength"], strength)] if strength is not None else job.iloc[:0]


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences_from_baseline(config: dict, baseline: dict) -> list[str]:
    """The settings in which a job's config differs from the baseline's, beyond its swept
    regularizer (``members.sweep``) and what does not change the model: e.g.
    ``["model.norm"]``, ``["regularizer.dropout"]``, ``["optim"]``."""
    sweep = str((config.get("members") or {}).get("sweep", ""))
    a, b = _flat(config), _flat(baseline)
    skip = (*_SAME_MODEL_KEYS, f"regularizer.{sweep}")
    found = set()
    for key in set(a) | set(b):
        if a.get(key) == b.get(key) or any(key == s or key.startswith(s + ".") for s in skip):
            continue
        parts = key.split(".")
        found.add("optim" if parts[0] == "optim" else ".".join(parts[:2]))
    return sorted(found)


def comparator_of(results: Results, dataset: str, job: pd.DataFrame) -> Comparator:
    """The baseline ``none``, or the family's own weakest setting when its config differs
    from the baseline's in more than its swept regularizer (without config files: when its
    optimizer or learning rate differs), or when the dataset has no baseline."""
    family = str(job["family"].iloc[0])
    name = str(job["strength_name"].iloc[0])
    base = results.job(dataset, BASELINE)
    if family == BASELINE:
        return Comparator(BASELINE, 0.0)
    if not (base["status"] == "ok").any():
        return Comparator(family, weakest_strength(job), name,
                          "has no baseline (family none) that trained on this dataset to compare with")
    own = results.configs.get((dataset, family))
    base_config = results.configs.get((dataset, BASELINE))
    if own and base_config:
        differs = differences_from_baseline(own, base_config)
    else:
        same = (base["optimizer"] == job["optimizer"].iloc[0]) & (base["lr"] == job["lr"].iloc[0]) \
            if "optimizer" in job and "optimizer" in base else pd.Series([True])
        differs = [] if same.all() else ["optim"]
    if not differs:
        return Comparator(BASELINE, 0.0)
    return Comparator(family, weakest_strength(job), name, f"differs from the baseline in {', '.join(differs)}")


def _comparator_rows(results: Results, dataset: str, job: pd.DataFrame, comparator: Comparator) -> pd.DataFrame:
    if comparator.family == BASELINE:
        return results.job(dataset, BASELINE)
    return at_strength(job, comparator.strength)


def ordered_strengths(job: pd.DataFrame) -> list[float]:
    """A job's strengths, weakest first (λ, p, σ ascending; patience, c descending)."""
    name = str(job["strength_name"].iloc[0])
    return sorted(job["strength"].dropna().unique(), reverse=stronger_is_smaller(name))


@dataclass
class JobTables:
    """One job's ok members as seeds x strengths tables (NaN: diverged or missing), its
    strengths weakest first, and its comparator's members by seed."""

    strengths: list[float]
    seeds: list[int]
    tables: dict[str, np.ndarray]  # column -> (seeds, strengths)
    base: dict[str, np.ndarray]  # column -> (seeds,): the comparator's
    own: int | None  # the comparator's column when it is the family's own setting

    @classmethod
    def of(cls, job: pd.DataFrame, base_rows: pd.DataFrame, comparator: Comparator) -> "JobTables":
        strengths = ordered_strengths(job)
        base_ok = base_rows[base_rows["status"] == "ok"]
        seeds = sorted(set(job["seed"]) & set(base_ok["seed"]))
        ok = job[job["status"] == "ok"]
        columns = [c for c in ("val_metric", "test_metric", "val_loss", "test_loss") if c in job]
        tables = {c: ok.pivot_table(index="seed", columns="strength", values=c, aggfunc="first")
                  .reindex(index=seeds, columns=strengths).to_numpy(dtype=float) for c in columns}
        base = {c: base_ok.set_index("seed")[c].reindex(seeds).to_numpy(dtype=float) for c in columns if c in base_ok}
        own = None
        if comparator.family != BASELINE and comparator.strength is not None:
            own = int(np.argmin(np.abs(np.asarray(strengths) - comparator.strength)))
        return cls(strengths, seeds, tables, base, own)

    def identical(self, choices: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Per seed (``rows``): the chosen member is its comparator's, to the bit (the
        comparator's own column, or every loss and metric equal)."""
        same = np.ones(len(rows), dtype=bool)
        for column, table in self.tables.items():
            same &= table[rows, choices] == self.base[column][rows]
        return same | (choices == self.own) if self.own is not None else same


def _measure(results: Results, dataset: str, job: pd.DataFrame, comparator: Comparator, settings: Settings,
             fixed: float | None = None) -> Finding:
    """The finding of a family against its comparator, before Holm: the effect of choosing
    its strength on validation without the seed it is judged on (:func:`cross_fitted_effect`),
    or, with ``fixed``, of that one strength on every seed (a near tie's alternative)."""
    family, metric = str(job["family"].iloc[0]), str(job["metric_name"].iloc[0])
    name = str(job["strength_name"].iloc[0])
    t = JobTables.of(job, _comparator_rows(results, dataset, job, comparator), comparator)
    val, test = t.tables["val_metric"], t.tables["test_metric"]
    base = t.base["test_metric"]
    best = best_column(val) if t.seeds else None
    if fixed is None:
        measured, choices = cross_fitted_effect(val, test, base) if t.seeds else (paired_effect([]), np.full(0, -1))
    else:
        choices = np.full(len(t.seeds), t.strengths.index(fixed))
        measured = paired_effect((test[:, choices[0]] - base)[np.isfinite(base)])
    usable = (choices >= 0) & np.isfinite(base)
    rows = np.flatnonzero(usable)
    seeds = pd.Index(np.asarray(t.seeds)[rows], name="seed")
    chosen_test = pd.Series(test[rows, choices[rows]], index=seeds)
    f = Finding(dataset=dataset, family=family, strength_name=name,
                strength=None if best is None else float(t.strengths[best]), metric_name=metric,
                margin=settings.margin(metric), comparator=comparator, test=mean_interval(chosen_test),
                baseline=mean_interval(pd.Series(base, dtype=float)), effect=measured.interval(),
                diffs=pd.Series(measured.diffs, index=seeds[:len(measured.diffs)]), measured=measured,
                chosen=pd.Series(np.asarray(t.strengths, dtype=float)[choices[rows]], index=seeds))
    if family == BASELINE:
        f.verdict = "baseline"
    elif best is None or measured.n < 2:
        f.verdict = NOT_MEASURED
    elif t.identical(choices[rows], rows).all():
        f.verdict = NO_REGULARIZATION
    else:
        f.verdict = UNDETERMINED  # a test: decided with the dataset's other tests (_holm_verdicts)
    if fixed is None and best is not None:
        f.near_tied = [float(t.strengths[j]) for j in near_ties(val, best)]
        trained = results.members.loc[results.members["dataset"] == dataset].get("epochs_trained")
        f.note = _never_stopped(job, f.chosen, float(trained.max()) if trained is not None else math.nan)
    return f


def _never_stopped(job: pd.DataFrame, chosen: pd.Series, epochs: float) -> str:
    """Early stopping whose chosen members all trained every epoch (``epochs``: the most any
    member of the dataset trained): what it gains is the best-validation epoch's weights,
    which it keeps, not stopping."""
    if str(job["strength_name"].iloc[0]) != "patience" or "epochs_trained" not in job or chosen.empty:
        return ""
    ok = job[job["status"] == "ok"].set_index(["seed", "strength"])["epochs_trained"]
    trained = [ok.get((seed, strength)) for seed, strength in chosen.items()]
    if all(t == epochs for t in trained):
        return ("no chosen member stopped early (patience at least the epochs trained): the effect is that of "
                "keeping each member's best-validation epoch")
    return ""


def _holm_verdicts(found: list[Finding], settings: Settings) -> list[str]:
    """Decide the tested findings together (:func:`stats.decide`: both tests, Holm across
    ``found``), setting their p-values and verdicts; returns every finding's verdict."""
    tested = [f for f in found if f.tested]
    margins = {f.margin for f in tested}
    if len(margins) > 1:
        raise ValueError(f"one dataset's findings have several equivalence margins: {sorted(margins)}")
    for f, d in zip(tested, decide([f.measured for f in tested], margins.pop() if margins else 0.0, settings.alpha)):
        f.p_value, f.p_equivalence = d.p_value, d.p_equivalence
        f.p_adjusted, f.p_equivalence_adjusted, f.verdict = d.p_adjusted, d.p_equivalence_adjusted, d.verdict
    return [f.verdict for f in found]


def findings(results: Results, settings: Settings = Settings()) -> list[Finding]:
    """One finding per dataset and family, in report order, with Holm's correction across
    each dataset's tests, borderline marks and, for undetermined rows, the seeds needed."""
    out: list[Finding] = []
    for dataset in ordered(results.members["dataset"].unique(), DATASET_ORDER):
        rows = results.members[results.members["dataset"] == dataset]
        found, alternatives = [], []
        for _, family, job in jobs(rows):
            comparator = comparator_of(results, dataset, job)
            f = _measure(results, dataset, job, comparator, settings)
            found.append(f)
            alternatives.append([_measure(results, dataset, job, comparator, settings, fixed=s) for s in f.near_tied])
        verdicts = _holm_verdicts(found, settings)
        tests = sum(f.tested for f in found)
        for i, (f, alts) in enumerate(zip(found, alternatives)):
            reasons = [f"adjusted p {sig(p, 2)} near α = {sig(settings.alpha)}" for p in
                       (f.p_adjusted, f.p_equivalence_adjusted) if near_alpha(p, settings.alpha)]
            for alt, strength in zip(alts, f.near_tied):  # the same Holm family, this row chosen otherwise
                swapped = [replace(g) for g in found]
                swapped[i] = alt
                other = _holm_verdicts(swapped, settings)[i]
                if other != verdicts[i]:
                    reasons.append(f"{f.strength_name} = {sig(strength)}, nearly tied with "
                                   f"{sig(f.strength)} on validation, would give {other} on every seed")
            f.borderline = "; ".join(reasons)
            if f.verdict == UNDETERMINED:
                sd = f.measured.sd
                f.seeds_to_decide, f.decided_as = seeds_to_decide(f.effect.mean, sd, f.margin,
                                                                  settings.alpha / max(tests, 1), settings.power)
            f.text = _sentence(f, settings, max(tests, 1))
        out += found
    return out


def dataset_power(found: list[Finding], settings: Settings = Settings()) -> list[DatasetPower]:
    """Per dataset: the effect its findings detect with the stated power at alpha / m
    (Holm's strictest step, m the dataset's tests), from the pooled paired spread."""
    out = []
    for dataset in ordered({f.dataset for f in found}, DATASET_ORDER):
        rows = [f for f in found if f.dataset == dataset]
        tested = [f for f in rows if f.tested]
        seeds = max((f.baseline.n for f in rows), default=0)
        sd = pooled_sd([f.measured.sd for f in tested])
        m = max(len(tested), 1)
        alpha = settings.alpha / m
        p = DatasetPower(dataset=dataset, metric_name=rows[0].metric_name, margin=rows[0].margin, seeds=seeds,
                         tests=len(tested), sd=sd, detectable=detectable_effect(sd, seeds, alpha, settings.power),
                         alpha=settings.alpha, power=settings.power)
        p.text = _power_sentence(p)
        out.append(p)
    return out


def _power_sentence(p: DatasetPower) -> str:
    if p.tests == 0 or not math.isfinite(p.detectable):
        return f"On {p.dataset}, no finding is a test, so there is no power to state ({p.seeds} seeds)."
    return (f"With {p.seeds} seeds, this study detects on {p.dataset} effects of at least {sig(p.detectable)} "
            f"{p.metric_name} at the pooled paired spread of its findings ({sig(p.sd)}; rows that spread more need "
            f"larger effects), with probability {sig(p.power)} at α = {sig(p.alpha)}/{p.tests} for its {p.tests} tests, "
            f"against an equivalence margin of ±{sig(p.margin)}.")


# --- in words ---


def _setting(f: Finding) -> str:
    text = f"{f.strength_name} = {sig(f.strength)}"
    return text + (", that is, no regularization at all" if f.strength == 0 and f.strength_name != "patience" else "")


def _choices(f: Finding) -> str:
    """How often each seed's leave-one-out choice was the preferred strength, in words."""
    if f.chosen is None or f.chosen.empty:
        return ""
    agree = int(np.isclose(f.chosen, f.strength).sum())
    if agree == len(f.chosen):
        return f"chosen without each seed's own members on all {agree} seeds"
    others = ", ".join(sig(v) for v in sorted(set(f.chosen[~np.isclose(f.chosen, f.strength)])))
    return f"chosen without each seed's own members on {agree} of {len(f.chosen)} seeds (else {others})"


def _sentence(f: Finding, settings: Settings, tests: int = 1) -> str:
    if f.family == BASELINE:
        return (f"The unregularized baseline reaches a test {f.metric_name} of {estimate(f.test)}"
                f" over {f.test.n} seeds.")
    if f.strength is None:
        return f"{f.family}: no setting trained on every seed without diverging; nothing to compare."
    against = "the baseline" if f.comparator.family == BASELINE else \
        f"its own non-binding setting ({f.comparator.label}; it {f.comparator.reason})"
    if f.verdict == NOT_MEASURED:
        return (f"{f.family}: at its best setting ({_setting(f)}) the test {f.metric_name} is "
                f"{sig(f.test.mean)}; fewer than two seeds pair with {against}.")
    if f.verdict == NO_REGULARIZATION:
        return (f"{f.family}: no regularization selected: on every seed its validation choice trains the same "
                f"models as {against}, so there is nothing to test.")
    numbers = (f"tuned on validation ({_setting(f)}, {_choices(f)}) the test {f.metric_name} is "
               f"{sig(f.test.mean)} against {sig(f.baseline.mean)} for {against}, a paired difference of "
               f"{effect_text(f.effect)} over {f.effect.n} seeds (p = {sig(f.p_value, 2)}, Holm-adjusted "
               f"{sig(f.p_adjusted, 2)}; equivalence within ±{sig(f.margin)}: adjusted p "
               f"{sig(f.p_equivalence_adjusted, 2)})")
    head = {BETTER: f"{f.family} does better", WORSE: f"{f.family} does worse",
            EQUIVALENT: f"{f.family} is equivalent to {against if f.comparator.family != BASELINE else 'the baseline'}",
            UNDETERMINED: f"{f.family} is undetermined"}[f.verdict]
    text = f"{head}: {numbers}."
    if f.note:
        text += f" Note: {f.note}."
    if f.verdict == EQUIVALENT and f.p_adjusted < settings.alpha:
        text += " The difference is real but smaller than the margin."
    if f.verdict == UNDETERMINED:
        text += (f" About {f.seeds_to_decide} seeds would likely decide it ({f.decided_as} with probability "
                 f"{sig(settings.power)} at α/{tests}, if the observed effect is the true one)."
                 if f.seeds_to_decide else " No feasible number of seeds would decide it at the observed effect.")
    if f.borderline:
        text += f" Borderline: {f.borderline}."
    return text


def ranking(found: list[Finding], dataset: str) -> list[Finding]:
    """The dataset's families, best first by their mean paired effect against their
    comparator (the baseline itself and rows without a test at 0)."""
    rows = [f for f in found if f.dataset == dataset and f.strength is not None]

    def key(f: Finding) -> float:
        if not f.tested:
            return 0.0 if f.verdict != NOT_MEASURED else -math.inf
        return f.effect.mean

    return sorted(rows, key=key, reverse=True)


def ranking_sentence(found: list[Finding], dataset: str) -> str:
    """One sentence: how many families do better, are equivalent, do worse, are
    undetermined or select no regularization, naming the decided ones."""
    rows = [f for f in ranking(found, dataset) if f.family != BASELINE]
    groups = {v: [f.family for f in rows if f.verdict == v] for v in (BETTER, EQUIVALENT, WORSE, UNDETERMINED,
                                                                        NO_REGULARIZATION)}
    parts = []
    if groups[BETTER]:
        comparator = "its comparator" if len(groups[BETTER]) == 1 else "their comparators"
        order = ", best first" if len(groups[BETTER]) > 1 else ""
        parts.append(_counted(groups[BETTER], "does", "do") + f" better than {comparator}"
                     f" ({', '.join(groups[BETTER])}{order})")
    if groups[EQUIVALENT]:
        parts.append(_counted(groups[EQUIVALENT], "is", "are") + f" equivalent to it ({', '.join(groups[EQUIVALENT])})")
    if groups[WORSE]:
        its = "its" if len(groups[WORSE]) == 1 else "their"
        parts.append(_counted(groups[WORSE], "does", "do") + f" worse even at {its} best setting"
                     f" ({', '.join(groups[WORSE])})")
    if groups[UNDETERMINED]:
        parts.append(_counted(groups[UNDETERMINED], "is", "are") + " undetermined")
    if groups[NO_REGULARIZATION]:
        parts.append(_counted(groups[NO_REGULARIZATION], "selects", "select") + " no regularization")
    return f"On {dataset}, " + "; ".join(parts) + "." if parts else f"On {dataset}, nothing to compare."


def _count(families: list[str]) -> str:
    return f"{len(families)} famil{'y' if len(families) == 1 else 'ies'}"


def _counted(families: list[str], one: str, many: str) -> str:
    """"1 family shows", "3 families show": the count with its verb agreeing."""
    return f"{_count(families)} {one if len(families) == 1 else many}"


def verdict_counts(found: list[Finding]) -> dict[str, int]:
    """How many findings carry each label (the baseline rows left out)."""
    return {label: sum(f.verdict == label for f in found) for label in LABELS if label != "baseline"}


# --- paired differences against strength (the figure's data) ---


def paired_by_strength(results: Results, found: list[Finding], columns=("val_metric", "test_metric")) -> pd.DataFrame:
    """Per dataset, family (not the baseline), strength and column: the paired difference
    against the finding's comparator over seeds, its mean and 95% t-interval (``mean, lo,
    hi, n``)."""
    rows = []
    m = results.members[results.members["status"] == "ok"]
    for f in found:
        if f.family == BASELINE or f.strength is None:
            continue
        job = m[(m["dataset"] == f.dataset) & (m["family"] == f.family)]
        base = _comparator_rows(results, f.dataset, job, f.comparator)
        base = base[base["status"] == "ok"].set_index("seed")
        for column in columns:
            # seeds x strengths, minus the comparator's value of each seed
            grid = job.pivot_table(index="seed", columns="strength", values=column, aggfunc="first", dropna=False)
            diffs = grid.sub(base[column].reindex(grid.index), axis=0)
            for strength in grid.columns:
                iv = mean_interval(diffs[strength])
                rows.append({"dataset": f.dataset, "family": f.family, "strength": float(strength), "column": column,
                             **iv.as_dict()})
    return pd.DataFrame(rows, columns=["dataset", "family", "strength", "column", "mean", "lo", "hi", "n"])


# --- checks of the data and the baseline ---


@dataclass
class DataCheck:
    dataset: str
    overfit: Interval  # final minus minimum validation loss of the baseline
    min_epoch: float  # median epoch of the baseline's minimum validation loss
    epochs: float  # median epochs trained
    val_minus_test: Interval  # validation minus test metric of the baseline
    val_below_train: float  # fraction of the baseline's members with val loss < train loss
    text: str


def data_checks(members: pd.DataFrame, curves: pd.DataFrame) -> list[DataCheck]:
    """Per dataset, from the baseline: does it overfit, and do the splits agree?

    Overfitting: the final validation loss against the minimum of its curve, paired per
    seed. Agreement: validation minus test metric (0 when the two held-out draws are alike)
    and how often the validation loss is below the training loss (rare when a model fits
    its own training data better than new data).
    """
    out = []
    for dataset in ordered(members["dataset"].unique(), DATASET_ORDER):
        base = members[(members["dataset"] == dataset) & (members["family"] == BASELINE)
                       & (members["status"] == "ok")]
        if base.empty:
            continue
        rows = curves[(curves["dataset"] == dataset) & (curves["family"] == BASELINE)]
        per_seed = rows.groupby("seed")["val_loss"]
        final = rows.sort_values("epoch").groupby("seed")["val_loss"].last()
        low = per_seed.min()
        min_epoch = rows.loc[per_seed.idxmin(), "epoch"].median() if len(rows) else float("nan")
        check = DataCheck(
            dataset=dataset, overfit=paired_difference(final, low), min_epoch=float(min_epoch),
            epochs=float(base["epochs_trained"].median()),
            val_minus_test=paired_difference(by_seed(base, "val_metric"), by_seed(base, "test_metric")),
            val_below_train=float((base["val_loss"] < base["train_loss"]).mean()), text="")
        check.text = _check_sentence(check, str(base["metric_name"].iloc[0]))
        out.append(check)
    return out


def _check_sentence(c: DataCheck, metric: str) -> str:
    if c.overfit.above(0):
        fit = (f"The baseline overfits {c.dataset}: its validation loss reaches its minimum around epoch "
               f"{sig(c.min_epoch)} of {sig(c.epochs)} and ends {estimate(c.overfit)} "
               f"above it.")
    else:
        fit = (f"The baseline does not measurably overfit {c.dataset}: its final validation loss is "
               f"{estimate(c.overfit)} above its minimum.")
    agree = ("the validation and test draws agree" if not (c.val_minus_test.above(0) or c.val_minus_test.below(0))
             else "the validation and test draws differ systematically")
    return (f"{fit} Validation minus test {metric} of the baseline: {effect_text(c.val_minus_test)}"
            f" ({agree}); validation loss below training loss in "
            f"{sig(100 * c.val_below_train)}% of its members.")
