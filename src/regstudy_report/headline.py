"""The headline metrics: ``reports/metrics.json``, the one file DVC reads as metrics
(`dvc metrics show`, `dvc metrics diff`, `dvc exp show`).

At most :data:`MAX_VALUES` (40) values, so that a change reads at a glance; every detail
stays in ``findings.json`` and ``claims.json`` (outputs of the report stage, not
metrics). The layout, 37 values with the six built-in datasets::

    <dataset>.verdicts         how many findings carry each label, in one string:
                               "1 better, 5 equivalent, 4 undetermined" (labels with
                               none left out; "none" when the dataset has no finding)
    <dataset>.best_family      the tested family with the largest mean paired effect
                               (family at its chosen strength - its comparator, on test,
                               in metric units; positive helps), whatever its verdict;
                               "none", with a null effect and width, when no finding of
                               the dataset is tested (DVC lists no null)
    <dataset>.best_effect      that effect, the mean over seeds
    <dataset>.best_half_width  half the width of its 95% Student-t interval:
                               the interval is best_effect ± best_half_width
    study.findings.<label>     findings carrying each label (6 values)
    study.claims.<verdict>     claim rows carrying each verdict (5), and `fragile`
    study.members              members trained (one network per strength and seed)

4 values per dataset and 13 for the study: 4 d + 13 <= 40 for up to 6 datasets (a
study with CSV files of its own may hold more; :func:`count_values` says how many).
The interval is symmetric (a t-interval), so its half width and the effect give it in
two numbers, not three. Nothing measured in seconds: the file is a hashed output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from regstudy_report.findings import BASELINE, LABELS, Finding

#: The most values `dvc metrics show` should list (the issue's budget for a screen).
MAX_VALUES = 40

#: The labels a finding can carry, in the order `verdicts` names them.
FINDING_LABELS = tuple(label for label in LABELS if label != "baseline")

#: The flags of the `dvc exp show` that fits a screen (docs/experiments.md quotes them):
#: only the columns whose values differ between the experiments shown, without the
#: dependencies' hashes, with every dataset's verdicts and best family kept.
#: (DVC matches each regex at the start of a column's name; deps are named by their path.)
EXP_SHOW_FLAGS = ("--only-changed", "--drop", "(data|results|src|conf)(/|$)", "--keep", r".*\.(verdicts|best_family)$")


def verdict_text(labels: list[str]) -> str:
    """``"1 better, 5 equivalent, 4 undetermined"``: how many of ``labels`` carry each
    finding label, in :data:`FINDING_LABELS` order, labels with none left out."""
    parts = [f"{labels.count(label)} {label}" for label in FINDING_LABELS if label in labels]
    return ", ".join(parts) if parts else "none"


def best_finding(found: list[Finding], dataset: str) -> Finding | None:
    """The dataset's tested finding (better, equivalent, worse or undetermined) with the
    largest mean paired effect; ties go to the family named first alphabetically. None
    when no finding of the dataset was tested."""
    tested = [f for f in found if f.dataset == dataset and f.family != BASELINE and f.tested]
    return max(sorted(tested, key=lambda f: f.family), key=lambda f: f.effect.mean, default=None)


def headline_metrics(found: list[Finding], datasets: list[str], claims: Mapping, members: int,
                     number: Callable) -> dict:
    """``reports/metrics.json``: per dataset its verdicts and its best family's effect
    with the interval's half width, study-wide the verdict counts of findings and claims
    and the members trained (the layout of this module's docstring). ``claims`` is
    ``claims.json`` (its ``verdicts`` and ``fragile``); ``number`` rounds a float for JSON."""
    metrics: dict = {}
    for dataset in datasets:
        best = best_finding(found, dataset)
        labels = [f.verdict for f in found if f.dataset == dataset and f.family != BASELINE]
        metrics[dataset] = {
            "verdicts": verdict_text(labels),
            "best_family": best.family if best else "none",
            "best_effect": number(best.effect.mean) if best else None,
            "best_half_width": number((best.effect.hi - best.effect.lo) / 2) if best else None,
        }
    metrics["study"] = {
        "findings": {label: sum(f.verdict == label for f in found) for label in FINDING_LABELS},
        "claims": {**claims["verdicts"], "fragile": claims["fragile"]},
        "members": members,
    }
    return metrics


def count_values(metrics: Mapping) -> int:
    """Every leaf of the nested mapping ``metrics``, a string or a null included: the most
    values `dvc metrics show` lists for it (one per leaf, nulls left out)."""
    return len(flat_keys(metrics))


def flat_keys(metrics: Mapping, prefix: str = "") -> dict[str, object]:
    """``{"signal.best_effect": 0.012, "study.findings.better": 3, ...}``: the leaves under
    the dotted names `dvc metrics show` and `dvc exp show` give them."""
    out: dict[str, object] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_keys(value, f"{name}."))
        else:
            out[name] = value
    return out

