"""The committed report's numbers hold together: in reports/findings.json (what `dvc repro`
made of the committed study), every dataset's better/worse/equivalent verdicts are those
Holm's correction allows on its own raw p-values, and metrics.json counts the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

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


def test_the_committed_headline_metrics_count_the_committed_findings(committed):
    metrics = json.loads((ROOT / "reports" / "metrics.json").read_text())
    for dataset, by_family in committed["findings"].items():
        for verdict in ("better", "equivalent", "worse", "undetermined"):
            assert metrics[dataset][verdict] == sum(e["verdict"] == verdict for e in by_family.values())
        assert metrics[dataset]["seeds"] == committed["datasets"][dataset]["seeds"]
    assert metrics["study"]["findings"] == committed["verdicts"]
