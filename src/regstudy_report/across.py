"""Across datasets: which family helps most overall, and whether any can be told apart.

Two views, both from the findings (each family at its best validation setting against
its comparator, paired by seed):

- **Aggregates per family**: the probability of improvement (the share of seeds on
  which the family beats its comparator, averaged over datasets) and the interquartile
  mean of the paired effects, each effect divided by its dataset's equivalence margin so
  that R² and accuracy share one scale (1 = one margin, the smallest effect that
  matters), every dataset weighing the same whatever its number of seeds. Intervals: 95% percentile bootstrap, resampling seeds within each dataset
  (stratified), as in Agarwal et al. 2021 (rliable).
- **Ranks**: per dataset, the families ranked by their mean test metric (1 = best; metrics
  within a tenth of the equivalence margin tie), the Friedman test of "all families rank
  alike", and Nemenyi's post-hoc test of each pair (``scikit-posthocs``), drawn as a
  critical-difference diagram (Demšar 2006). Only families trained on every dataset are
  ranked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from regstudy_report.findings import BASELINE, NOT_MEASURED, Finding
from regstudy_report.stats import Interval, improvement_probability, sig, stratified_bootstrap, weighted_iqm
from regstudy_report.tables import FAMILY_ORDER, ordered


@dataclass
class FamilyAggregate:
    family: str
    datasets: int  # datasets with a measured finding
    improvement: Interval  # probability of improvement over the comparator (mean over datasets)
    effect_iqm: Interval  # interquartile mean of the margin-normalized paired effects


def normalized_effects(found: list[Finding], family: str) -> list[np.ndarray]:
    """Per dataset (a stratum), the family's paired differences divided by the dataset's
    equivalence margin; datasets where it was not measured are left out."""
    return [f.diffs.to_numpy(dtype=float) / f.margin for f in found
            if f.family == family and f.verdict not in (NOT_MEASURED, "baseline") and len(f.diffs)]


def _mean_improvement(strata: list[np.ndarray], axis: int = -1):
    """The probability of improvement of each stratum, averaged (vectorized over resamples)."""
    return np.mean([improvement_probability(s, axis=axis) for s in strata], axis=0)


def _pooled_iqm(strata: list[np.ndarray], axis: int = -1):
    """The IQM of all strata's values together, each stratum (dataset) weighing the same
    whatever its number of seeds (vectorized over resamples)."""
    weights = np.concatenate([np.full(s.shape[axis], 1.0 / s.shape[axis]) for s in strata])
    return weighted_iqm(np.concatenate(strata, axis=axis), weights, axis=axis)


def family_aggregates(found: list[Finding]) -> list[FamilyAggregate]:
    """Per family (not the baseline), in report order: probability of improvement and the
    IQM of margin-normalized effects, with stratified bootstrap intervals."""
    out = []
    for family in ordered({f.family for f in found} - {BASELINE}, FAMILY_ORDER):
        strata = normalized_effects(found, family)
        if not strata:
            continue
        out.append(FamilyAggregate(family, len(strata), stratified_bootstrap(strata, _mean_improvement),
                                   stratified_bootstrap(strata, _pooled_iqm)))
    return sorted(out, key=lambda a: -a.effect_iqm.mean if math.isfinite(a.effect_iqm.mean) else math.inf)


def aggregate_sentence(aggregates: list[FamilyAggregate]) -> str:
    """The family with the largest typical effect among those measured on the most
    datasets, and whether the next one can be told from it."""
    if not aggregates:
        return "No family was measured on any dataset."
    most = max(a.datasets for a in aggregates)
    rivals = [a for a in aggregates if a.datasets == most and a.effect_iqm.defined]
    if not rivals:
        return "No family's aggregate has an interval."
    top, rest = rivals[0], rivals[1:]
    text = (f"Across the {most} datasets where they all trained, {top.family} has the largest typical effect: an "
            f"interquartile mean of {sig(top.effect_iqm.mean)} equivalence margins "
            f"[{sig(top.effect_iqm.lo)}, {sig(top.effect_iqm.hi)}], beating its comparator on "
            f"{sig(100 * top.improvement.mean)}% of seeds")
    if rest:
        second = rest[0]
        apart = top.effect_iqm.lo > second.effect_iqm.hi
        text += (f"; its interval {'lies above' if apart else 'overlaps'} that of the next, {second.family} "
                 f"({sig(second.effect_iqm.mean)} [{sig(second.effect_iqm.lo)}, {sig(second.effect_iqm.hi)}])"
                 + ("" if apart else ", so the two cannot be told apart here"))
    clear = sum(a.effect_iqm.defined and a.effect_iqm.lo > 0 for a in aggregates)
    return (text + f". {clear} of {len(aggregates)} families have an interval above 0. The intervals resample seeds "
            "within these datasets (95% each, not corrected across families; every dataset weighs the same): they "
            "say how stable an aggregate is here, not how a family would fare on other data.")


@dataclass
class Ranks:
    families: list[str]
    datasets: list[str]
    scores: pd.DataFrame  # datasets x families: mean test metric at the best setting
    mean_ranks: pd.Series  # 1 = best, averaged over datasets
    friedman_p: float
    nemenyi: pd.DataFrame | None  # pairwise p-values, families x families
    separable: list[tuple[str, str]]  # pairs with a Nemenyi p below alpha
    text: str


def rank_families(found: list[Finding], alpha: float = 0.05) -> Ranks | None:
    """Friedman's test over datasets (blocks) and families (treatments) of the mean test
    metric at each family's best setting, with Nemenyi's pairwise tests; None with fewer
    than 3 families or 2 datasets in common."""
    # test metrics closer than a tenth of the equivalence margin tie: ranking them would
    # order noise (R² differences of 1e-8 between identical-looking models)
    scores = pd.DataFrame([{"dataset": f.dataset, "family": f.family,
                            "score": np.round(f.test.mean / (f.margin / 10)) * (f.margin / 10)} for f in found
                           if f.strength is not None and math.isfinite(f.test.mean)])
    if scores.empty:
        return None
    table = scores.pivot(index="dataset", columns="family", values="score").dropna(axis=1)
    families = ordered(table.columns, FAMILY_ORDER)
    table = table[families]
    if len(families) < 3 or len(table) < 2:
        return None
    mean_ranks = table.rank(axis=1, ascending=False).mean().sort_values()
    friedman = stats.friedmanchisquare(*(table[c].to_numpy() for c in families))
    nemenyi, separable = None, []
    import scikit_posthocs as sp

    nemenyi = sp.posthoc_nemenyi_friedman(table.to_numpy())
    nemenyi.index = nemenyi.columns = families
    separable = [(a, b) for i, a in enumerate(families) for b in families[i + 1:] if nemenyi.loc[a, b] < alpha]
    ranks = Ranks(families, list(table.index), table, mean_ranks, float(friedman.pvalue), nemenyi, separable, "")
    ranks.text = _ranks_sentence(ranks, alpha)
    return ranks


def _ranks_sentence(r: Ranks, alpha: float) -> str:
    head = (f"Ranked by test metric on each of {len(r.datasets)} datasets, {r.mean_ranks.index[0]} has the best "
            f"mean rank ({sig(r.mean_ranks.iloc[0])} of {len(r.families)}).")
    if not r.friedman_p < alpha:
        return (f"{head} But the Friedman test cannot tell the {len(r.families)} families apart "
                f"(p = {sig(r.friedman_p, 2)}): no family is shown to rank above another across datasets.")
    if not r.separable:
        return (f"{head} The Friedman test finds the ranks differ (p = {sig(r.friedman_p, 2)}), yet no pair "
                f"is separable by Nemenyi's test at α = {sig(alpha)}.")
    pairs = ", ".join(f"{a} vs {b}" for a, b in r.separable)
    return f"{head} Friedman p = {sig(r.friedman_p, 2)}; pairs Nemenyi's test separates: {pairs}."
