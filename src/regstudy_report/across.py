"""Across datasets: which family helps most overall, and whether any can be told apart.

Two views, both from the findings (each family at its best validation setting against
its comparator, paired by seed):

- **Aggregates per family**: the probability of improvement (the share of seeds on
  which the family beats its comparator, averaged over datasets) and the interquartile
  mean of the paired effects, each effect divided by its dataset's equivalence margin so
  that R² and accuracy share one scale (1 = one margin, the smallest effect that
  matters). Intervals: 95% percentile bootstrap, resampling seeds within each dataset
  (stratified), as in Agarwal et al. 2021 (rliable).
- **Ranks**: per dataset, the families ranked by their mean test metric at their best
  setting (1 = best), the Friedman test of "all families rank alike", and Nemenyi's
  post-hoc test of each pair (``scikit-posthocs``), drawn as a critical-difference
  diagram (Demšar 2006). Only families trained on every dataset are ranked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from regstudy_report.findings import BASELINE, NOT_MEASURED, Finding
from regstudy_report.stats import Interval, improvement_probability, iqm, sig, stratified_bootstrap
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
    """The IQM of all strata's values together (vectorized over resamples)."""
    return iqm(np.concatenate(strata, axis=axis), axis=axis)


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
    if not aggregates:
        return "No family was measured on any dataset."
    top = aggregates[0]
    clear = [a.family for a in aggregates if a.effect_iqm.defined and a.effect_iqm.lo > 0]
    return (f"Across datasets, {top.family} has the largest typical effect: an interquartile mean of "
            f"{sig(top.effect_iqm.mean)} equivalence margins [{sig(top.effect_iqm.lo)}, {sig(top.effect_iqm.hi)}], "
            f"beating its comparator on {sig(100 * top.improvement.mean)}% of seeds. {len(clear)} of "
            f"{len(aggregates)} families have an interval above 0. These intervals resample seeds within these "
            f"datasets (95% each, not corrected across families): they say how stable an aggregate is here, not "
            f"how a family would fare on other data.")


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
    scores = pd.DataFrame([{"dataset": f.dataset, "family": f.family, "score": f.test.mean} for f in found
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
