"""The committed report's numbers hold together: in reports/findings.json (what `dvc repro`
made of the committed study), every dataset's better/worse/equivalent verdicts are those
Holm's correction allows on its own raw p-values, and metrics.json, the headline DVC
reads as metrics, holds at most 40 values, each what findings.json and claims.json say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from regstudy_report.claims import CLAIM_VERDICTS
from regstudy_report.headline import FINDING_LABELS, MAX_VALUES, count_values, flat_keys

ROOT = Path(__file__).resolve().parents[2]
FINDINGS = ROOT / "reports" / "findings.json"
TESTED = ("better", "equivalent", "worse", "undetermined")


@pytest.fixture(scope="module")
def committed() -> dict:
    if not FINDINGS.exists():
        pytest.skip(f"{FINDINGS} is not there (a checkout without the committed report)")
    return json.loads(FINDINGS.read_text())


def test_the_committed_verdicts_are_what_holm_allows_on_the_studys_own_p_values(committed):
    alpha = committed["settings"]["alpha"]
    for dataset, by_family in committed["findings"].items():
        tested = {f: e for f, e in by_family.items() if e["verdict"] in TESTED}
        assert committed["datasets"][dataset]["tests"] == len(tested)
        families = list(tested)
        for key, adjusted_key in (("p", "p_adjusted"), ("p_equivalence", "p_equivalence_adjusted")):
            raw = np.array([tested[f][key] for f in families], dtype=float)
            holm = multipletests(raw, alpha=alpha, method="holm")[1]
            for family, expected in zip(families, holm):
                # the JSON keeps 6 significant digits of each
                assert tested[family][adjusted_key] == pytest.approx(expected, rel=1e-4, abs=1e-12), (dataset, family)
        for family, e in tested.items():
            verdict = ("equivalent" if e["p_equivalence_adjusted"] < alpha else
                       ("better" if e["effect"] > 0 else "worse") if e["p_adjusted"] < alpha else "undetermined")
            assert e["verdict"] == verdict, (dataset, family)
        untested = {f: (e["p"], e["p_adjusted"]) for f, e in by_family.items() if f not in tested}
        assert untested == dict.fromkeys(untested, (None, None)), dataset  # no p-value where no test


def test_the_committed_headline_metrics_are_at_most_40_values_and_no_timing():
    """`dvc metrics show` lists every leaf of metrics.json: at most 40 of them, each a
    key of regstudy_report.headline's layout (so no time, no detail)."""
    metrics = json.loads((ROOT / "reports" / "metrics.json").read_text())
    assert count_values(metrics) <= MAX_VALUES == 40
    datasets = set(metrics) - {"study"}
    assert count_values(metrics) == 4 * len(datasets) + 13
    for dataset in datasets:
        assert set(metrics[dataset]) == {"verdicts", "best_family", "best_effect", "best_half_width"}
    assert set(metrics["study"]) == {"findings", "claims", "members"}
    assert set(metrics["study"]["findings"]) == set(FINDING_LABELS)
    assert set(metrics["study"]["claims"]) == {*CLAIM_VERDICTS, "fragile"}
    assert all(not isinstance(v, float) or v == v for v in flat_keys(metrics).values())  # no NaN


def test_the_committed_headline_metrics_are_what_the_committed_findings_say(committed):
    """Recomputed from findings.json and claims.json by hand: each dataset's verdict
    counts, its tested family with the largest mean effect, that effect and the half
    width of its interval; the study's counts."""
    metrics = json.loads((ROOT / "reports" / "metrics.json").read_text())
    claims = json.loads((ROOT / "reports" / "claims.json").read_text())
    assert set(metrics) == {*committed["findings"], "study"}
    for dataset, by_family in committed["findings"].items():
        labels = [e["verdict"] for e in by_family.values()]
        counted = dict(part.split(" ", 1)[::-1] for part in metrics[dataset]["verdicts"].split(", "))
        assert {label: int(n) for label, n in counted.items()} == {v: labels.count(v) for v in set(labels)}
        tested = {f: e for f, e in by_family.items() if e["verdict"] in TESTED}
        best = max(sorted(tested), key=lambda f: tested[f]["effect"])
        assert metrics[dataset]["best_family"] == best
        assert metrics[dataset]["best_effect"] == tested[best]["effect"]
        half = (tested[best]["effect_hi"] - tested[best]["effect_lo"]) / 2
        assert metrics[dataset]["best_half_width"] == pytest.approx(half, rel=1e-5)
        # the interval is symmetric: effect ± half width are its bounds
        assert tested[best]["effect"] - half == pytest.approx(tested[best]["effect_lo"], rel=1e-4, abs=1e-9)
    assert metrics["study"]["findings"] == committed["verdicts"]
    assert metrics["study"]["claims"] == {**claims["verdicts"], "fragile": claims["fragile"]}
    assert sum(metrics["study"]["claims"][v] for v in claims["verdicts"]) == sum(
        len(rows) for claim, rows in claims.items() if claim not in ("verdicts", "fragile"))
