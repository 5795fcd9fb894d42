"""The findings' verdicts on simulated studies with a known truth: Holm keeps the chance of
any false *better*/*worse* (and of any false *equivalent*) on a dataset at alpha, and an
effect of the size the report says it detects is found with the stated power.

A simulated dataset has a baseline and ``FAMILIES`` regularized families, ``SEEDS`` seeds.
A seed draws a shared offset (the data draw, which pairing cancels) and every member its
own noise (``NOISE``, the size of the study's: its paired differences spread 0.006-0.08);
all families are compared with the same baseline members, so their differences are
correlated, as in the study. The many simulated datasets go through
:func:`regstudy_report.stats.decide`, the decision :func:`findings.findings` makes for each
dataset; a few go through ``findings`` itself, from a members table, to show it decides
the same from the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from regstudy_report.findings import dataset_power, findings
from regstudy_report.settings import Settings
from regstudy_report.stats import BETTER, EQUIVALENT, WORSE, decide, detectable_effect
from regstudy_report.tables import Results

SEEDS, FAMILIES, NOISE, VAL_GAIN = 5, 12, 0.02, 0.05
STUDIES = 1000
SETTINGS = Settings()
MARGIN = SETTINGS.margin("r2")


def paired_differences(rng, effects: np.ndarray) -> list[np.ndarray]:
    """Each family's test metric minus the shared baseline's, per seed (the offset cancels)."""
    baseline = rng.normal(0, NOISE, SEEDS)
    return [effect + rng.normal(0, NOISE, SEEDS) - baseline for effect in effects]


def binomial_tolerance(p: float, n: int) -> float:
    """Three standard errors of a share p estimated from n simulated studies."""
    return 3 * math.sqrt(p * (1 - p) / n)


def test_holm_keeps_the_family_wise_error_of_a_dataset_at_alpha():
    rng = np.random.default_rng(20261205)
    null = np.zeros(FAMILIES)
    verdicts = [[d.verdict for d in decide(paired_differences(rng, null), MARGIN)] for _ in range(STUDIES)]
    share = np.mean([any(v in (BETTER, WORSE) for v in study) for study in verdicts])
    assert share <= SETTINGS.alpha + binomial_tolerance(SETTINGS.alpha, STUDIES), share
    # the simulation can tell: uncorrected, 12 tests at 5% each give about 40% of the
    # studies a false verdict (less than 1 - 0.95^12 = 46%: they share a baseline)
    uncorrected = np.mean([any(d.p_value < SETTINGS.alpha for d in decide(paired_differences(rng, null), MARGIN))
                           for _ in range(200)])
    assert uncorrected > 0.25


def test_holm_keeps_the_family_wise_error_of_equivalence_at_alpha():
    """Every true effect exactly at the margin: any *equivalent* is false."""
    rng = np.random.default_rng(11)
    at_margin = np.full(FAMILIES, MARGIN)
    share = np.mean([any(d.verdict == EQUIVALENT for d in decide(paired_differences(rng, at_margin), MARGIN))
                     for _ in range(STUDIES)])
    assert share <= SETTINGS.alpha + binomial_tolerance(SETTINGS.alpha, STUDIES), share


def test_an_effect_of_the_stated_detectable_size_is_found_with_the_stated_power():
    rng = np.random.default_rng(7)
    # what the report states it detects: from the paired spread at alpha / m (m tests);
    # the true spread of a paired difference here is NOISE·√2
    planted = detectable_effect(NOISE * math.sqrt(2), SEEDS, SETTINGS.alpha / FAMILIES, SETTINGS.power)
    effects = np.zeros(FAMILIES)
    effects[0] = planted
    found = np.mean([decide(paired_differences(rng, effects), MARGIN)[0].verdict == BETTER for _ in range(STUDIES)])
    assert found >= SETTINGS.power - binomial_tolerance(SETTINGS.power, STUDIES), found
    # and it is not found much more often: the statement is not loose (Holm's later steps
    # add a little power over alpha / m)
    assert found <= SETTINGS.power + 0.1, found


# --- the same decision through findings(), from a members table ---


def simulated_members(rng, effects: dict[str, float]) -> Results:
    """members.csv of one dataset: strength 0 is the baseline's own models, strength 0.1
    wins on validation (so it is selected and tested) and has the given test effect."""
    offsets = rng.normal(0.6, 0.1, SEEDS)
    base_val, base_test = offsets + rng.normal(0, NOISE, SEEDS), offsets + rng.normal(0, NOISE, SEEDS)
    rows = [{"family": "none", "strength": 0.0, "seed": s, "val_metric": base_val[s], "test_metric": base_test[s]}
            for s in range(SEEDS)]
    for i in range(FAMILIES):
        family = f"family_{i:02d}"
        for s in range(SEEDS):
            rows.append({"family": family, "strength": 0.0, "seed": s, "val_metric": base_val[s],
                         "test_metric": base_test[s]})
            rows.append({"family": family, "strength": 0.1, "seed": s,
                         "val_metric": offsets[s] + VAL_GAIN + rng.normal(0, NOISE),
                         "test_metric": offsets[s] + effects.get(family, 0.0) + rng.normal(0, NOISE)})
    members = pd.DataFrame(rows).assign(
        dataset="signal", status="ok", metric_name="r2", task="regression", optimizer="Adam", lr=1e-3,
        strength_name=lambda d: np.where(d["family"] == "none", "none", "lam"))
    members["member"] = members.groupby("family").cumcount()
    members["val_loss"], members["test_loss"] = 1 - members["val_metric"], 1 - members["test_metric"]
    empty = pd.DataFrame()
    return Results(members=members, curves=empty, layers=empty, params=empty, features=empty, predictions={},
                   data={})


def test_findings_decide_what_decide_does_from_the_same_differences():
    rng = np.random.default_rng(3)
    planted = {"family_00": 0.08, "family_01": -0.08}
    for _ in range(5):
        study = simulated_members(rng, planted)
        found = [f for f in findings(study, SETTINGS) if f.family != "none"]
        m = study.members
        base = m[m["family"] == "none"].set_index("seed")["test_metric"]
        diffs = [m[(m["family"] == f.family) & (m["strength"] == 0.1)].set_index("seed")["test_metric"] - base
                 for f in found]
        assert all(f.strength == 0.1 for f in found)
        expected = decide(diffs, MARGIN)
        assert [f.verdict for f in found] == [d.verdict for d in expected]
        assert [f.p_adjusted for f in found] == pytest.approx([d.p_adjusted for d in expected], rel=1e-12)
        power = dataset_power(findings(study, SETTINGS), SETTINGS)[0]
        assert (power.tests, power.seeds) == (FAMILIES, SEEDS)
    verdicts = {f.family: f.verdict for f in findings(simulated_members(np.random.default_rng(0), planted), SETTINGS)}
    assert (verdicts["family_00"], verdicts["family_01"]) == (BETTER, WORSE)
