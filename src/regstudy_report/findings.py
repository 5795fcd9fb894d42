"""What the study found, per dataset and family, in numbers and in words.

For each dataset and family: the best strength (highest mean validation metric), the
test metric there, and its effect against the unregularized baseline (family ``none``)
as a paired difference over seeds with a 95% t-interval, with a verdict: *helps* (the
interval is above 0), *hurts* (below 0) or *no detectable effect*. A family trained
with another optimizer than the baseline (the plain-SGD controls) is compared with its
own strength-0 members instead, so that the effect is the regularizer's, not the
optimizer's. The strength is
chosen on the validation split and judged on the test split, so the choice does not
flatter the effect. Every sentence of the report's findings is built here, from those
numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from regstudy_report.stats import Interval, effect_text, effect_verdict, estimate, mean_interval, paired_difference, sig
from regstudy_report.tables import best_strength, jobs, ordered, DATASET_ORDER

BASELINE = "none"


@dataclass
class Finding:
    dataset: str
    family: str
    strength_name: str
    strength: float | None
    metric_name: str
    test: Interval  # test metric at the best strength, over seeds
    baseline: Interval  # test metric of the baseline, over seeds
    baseline_name: str  # "none", or "<family> at <name> = 0" for a family with its own optimizer
    effect: Interval  # paired difference (family at best strength - baseline) of the test metric
    verdict: str
    text: str


def by_seed(rows: pd.DataFrame, column: str) -> pd.Series:
    """``column`` of the ok members of ``rows``, indexed by seed (one member per seed)."""
    ok = rows[rows["status"] == "ok"]
    return ok.set_index("seed")[column].sort_index()


def at_strength(job: pd.DataFrame, strength) -> pd.DataFrame:
    return job[job["strength"] == strength]


def _sentence(f: Finding) -> str:
    if f.strength is None:
        return f"{f.family}: every member diverged; nothing to compare."
    if f.family == BASELINE:
        return (f"The unregularized baseline reaches a test {f.metric_name} of {estimate(f.test)}"
                f" over {f.test.n} seeds.")
    setting = f"{f.strength_name} = {sig(f.strength)}"
    if f.strength == 0 and f.strength_name != "patience":
        setting += ", that is, no regularization at all"
    if not f.effect.defined:
        return (f"{f.family}: at its best setting ({setting}) the test {f.metric_name} is "
                f"{sig(f.test.mean)}; no baseline to compare with over two or more seeds.")
    against = "the baseline" if f.baseline_name == BASELINE else f"its own unregularized setting ({f.baseline_name})"
    return (f"{f.family} {f.verdict}: at its best setting ({setting}) the test {f.metric_name} is "
            f"{sig(f.test.mean)} against {sig(f.baseline.mean)} for {against}, a paired difference "
            f"of {effect_text(f.effect)} over {f.effect.n} seeds.")


def baseline_rows(members: pd.DataFrame, dataset: str, job: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The members a family is compared with: the baseline ``none`` trained with the same
    optimizer and learning rate, else the family's own strength-0 members."""
    rows = members[(members["dataset"] == dataset) & (members["family"] == BASELINE)]
    if "optimizer" in job and len(rows):
        same = (rows["optimizer"] == job["optimizer"].iloc[0]) & (rows["lr"] == job["lr"].iloc[0])
        if not same.all():
            own = job[job["strength"] == 0.0]
            label = f"{job['family'].iloc[0]} at {job['strength_name'].iloc[0]} = 0, {job['optimizer'].iloc[0]}"
            return own, label
    return rows, BASELINE


def findings(members: pd.DataFrame) -> list[Finding]:
    """One finding per dataset and family, in report order."""
    out = []
    for dataset, family, job in jobs(members):
        base_rows, base_name = baseline_rows(members, dataset, job)
        base = by_seed(base_rows, "test_metric")
        best = best_strength(job)
        chosen = by_seed(at_strength(job, best), "test_metric") if best is not None else pd.Series(dtype=float)
        effect = paired_difference(chosen, base) if len(base) else Interval(float("nan"), float("nan"), float("nan"), 0)
        f = Finding(dataset=dataset, family=family, strength_name=str(job["strength_name"].iloc[0]),
                    strength=best, metric_name=str(job["metric_name"].iloc[0]), test=mean_interval(chosen),
                    baseline=mean_interval(base), baseline_name=base_name, effect=effect,
                    verdict="baseline" if family == BASELINE else effect_verdict(effect), text="")
        f.text = _sentence(f)
        out.append(f)
    return out


def ranking(found: list[Finding], dataset: str) -> list[Finding]:
    """The dataset's families, best first by their mean paired effect against the baseline
    (the baseline itself at 0)."""
    rows = [f for f in found if f.dataset == dataset and f.strength is not None]
    key = lambda f: 0.0 if f.family == BASELINE else (f.effect.mean if f.effect.defined else float("-inf"))  # noqa: E731
    return sorted(rows, key=key, reverse=True)


def ranking_sentence(found: list[Finding], dataset: str) -> str:
    """One sentence: which families help, which hurt, and which show no detectable effect."""
    rows = [f for f in found if f.dataset == dataset and f.family != BASELINE]
    groups = {v: [f.family for f in ranking(rows, dataset) if f.verdict == v]
              for v in ("helps", "no detectable effect", "hurts")}
    parts = []
    if groups["helps"]:
        parts.append(_counted(groups["helps"], "beats", "beat") + f" the baseline ({', '.join(groups['helps'])}, best first)")
    if groups["no detectable effect"]:
        parts.append(_counted(groups["no detectable effect"], "shows", "show") + " no detectable effect")
    if groups["hurts"]:
        one = len(groups["hurts"]) == 1
        parts.append(_counted(groups["hurts"], "does", "do") + f" worse even at {'its' if one else 'their'} "
                     f"best setting ({', '.join(groups['hurts'])})")
    return f"On {dataset}, " + "; ".join(parts) + "." if parts else f"On {dataset}, nothing to compare."


def _count(families: list[str]) -> str:
    return f"{len(families)} famil{'y' if len(families) == 1 else 'ies'}"


def _counted(families: list[str], one: str, many: str) -> str:
    """"1 family shows", "3 families show": the count with its verb agreeing."""
    return f"{_count(families)} {one if len(families) == 1 else many}"


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
