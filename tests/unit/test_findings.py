"""Findings beyond the tests themselves (those are in test_error_control.py and
test_stats.py): the comparator, "no regularization selected", borderline rows, the seeds
an undetermined row needs, each dataset's power, the aggregates across datasets and the
report's settings; each against numbers computed here by hand, scipy or scikit-posthocs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from regstudy_report.across import family_aggregates, rank_families
from regstudy_report.findings import (
    NO_REGULARIZATION,
    comparator_of,
    dataset_power,
    differences_from_baseline,
    findings,
    paired_by_strength,
)
from regstudy_report.settings import Settings, SettingsError, read_settings, settings_from
from regstudy_report.stats import BETTER, UNDETERMINED, detectable_effect, seeds_to_decide
from regstudy_report.tables import Results

SEEDS = range(6)
BASE_CONFIG = {"family": "none", "members": {"sweep": "none"}, "model": {"norm": "none", "hidden": [64, 64, 64]},
               "regularizer": {"l2": None, "dropout": None, "max_norm": None},
               "optim": {"_target_": "torch.optim.Adam", "lr": 0.001}, "metrics": {"zero_threshold": 0.01}}


def config(family: str, sweep: str, **changes) -> dict:
    out = {**BASE_CONFIG, "family": family, "members": {"sweep": sweep, "strengths": [0.0, 1.0]},
           "regularizer": {**BASE_CONFIG["regularizer"], sweep: {"lam": 0.0}}}
    for key, value in changes.items():
        section, name = key.split("__")
        out[section] = {**out[section], name: value}
    return out


def job(dataset, family, strengths, value, name="lam", metric="r2") -> list[dict]:
    """Members of a job: ``value(strength, seed)`` -> (val_metric, test_metric)."""
    rows = []
    for member, (s, seed) in enumerate((s, seed) for s in strengths for seed in SEEDS):
        val, test = value(s, seed)
        rows.append({"dataset": dataset, "family": family, "member": member, "strength": float(s), "seed": seed,
                     "status": "ok", "strength_name": name if family != "none" else "none", "metric_name": metric,
                     "task": "regression" if metric == "r2" else "classification", "optimizer": "Adam", "lr": 1e-3,
                     "val_metric": val, "test_metric": test, "val_loss": 1 - val, "test_loss": 1 - test})
    return rows


def results(rows: list[dict], configs=None) -> Results:
    empty = pd.DataFrame()
    return Results(pd.DataFrame(rows), empty, empty, empty, empty, {}, {}, configs or {})


RNG = np.random.default_rng(5)
NOISE = {seed: RNG.normal(0, 0.01, 4) for seed in SEEDS}
BASE = {seed: 0.6 + 0.05 * seed for seed in SEEDS}


def baseline(dataset="signal", metric="r2") -> list[dict]:
    return job(dataset, "none", [0.0], lambda s, seed: (BASE[seed], BASE[seed]), metric=metric)


# --- the comparator ---


@pytest.mark.parametrize("family, sweep, changes, expected", [
    ("l2", "l2", {}, []),
    ("batchnorm_l2", "l2", {"model__norm": "batch"}, ["model.norm"]),
    ("dropout_max_norm", "max_norm", {"regularizer__dropout": {"p": 0.5}}, ["regularizer.dropout"]),
    ("l2_sgd", "l2", {"optim___target_": "torch.optim.SGD", "optim__lr": 0.2}, ["optim"]),
    ("l2", "l2", {"metrics__zero_threshold": 0.1}, []),  # measurement settings do not change the model
])
def test_differences_from_the_baseline_beyond_the_swept_regularizer(family, sweep, changes, expected):
    assert differences_from_baseline(config(family, sweep, **changes), BASE_CONFIG) == expected


def test_a_family_that_changes_the_network_is_judged_against_its_own_weakest_setting():
    rows = baseline() + job("signal", "batchnorm_l2", [0.0, 1e-3, 1e-2], lambda s, seed: (0.9 - s, 0.9))
    rows += job("signal", "dropout_max_norm", [0.1, 1.0, 100.0], lambda s, seed: (0.7, 0.7), name="c")
    rows += job("signal", "l2", [0.0, 1e-3], lambda s, seed: (0.7, 0.7))
    configs = {("signal", "none"): BASE_CONFIG,
               ("signal", "batchnorm_l2"): config("batchnorm_l2", "l2", model__norm="batch"),
               ("signal", "dropout_max_norm"): config("dropout_max_norm", "max_norm", regularizer__dropout={"p": .5}),
               ("signal", "l2"): config("l2", "l2")}
    r = results(rows, configs)
    m = r.members
    own = comparator_of(r, "signal", m[m["family"] == "batchnorm_l2"])
    assert (own.family, own.strength, own.label) == ("batchnorm_l2", 0.0, "batchnorm_l2 at lam = 0")
    assert "model.norm" in own.reason
    loose = comparator_of(r, "signal", m[m["family"] == "dropout_max_norm"])
    assert (loose.family, loose.strength) == ("dropout_max_norm", 100.0)  # c: the largest never binds
    assert comparator_of(r, "signal", m[m["family"] == "l2"]).family == "none"
    # against its own λ = 0 (test 0.9 everywhere) batchnorm_l2 changes nothing, although it
    # is 0.3 above the baseline: the network's change is not the regularizer's effect
    f = {f.family: f for f in findings(r)}["batchnorm_l2"]
    assert f.effect.mean == pytest.approx(0.0, abs=1e-12)


def test_no_regularization_selected_is_not_a_test():
    """Best at λ = 0 (the baseline's own models), or at a setting whose members are the
    baseline's to the bit (max-norm's c = 100): labelled, no p-value, not in Holm's m."""
    rows = baseline()
    rows += job("signal", "l2", [0.0, 1e-3], lambda s, seed: (BASE[seed] - s * 10, BASE[seed]) if s else
                (BASE[seed], BASE[seed]))
    rows += job("signal", "max_norm", [1.0, 100.0], lambda s, seed: (BASE[seed], BASE[seed]) if s == 100 else
                (BASE[seed] - 0.1, BASE[seed] - 0.1), name="c")
    rows += job("signal", "dropout", [0.0, 0.5], lambda s, seed: (BASE[seed] + s, BASE[seed] + 0.1 + NOISE[seed][0])
                if s else (BASE[seed], BASE[seed]), name="p")
    found = {f.family: f for f in findings(results(rows))}
    assert found["l2"].verdict == found["max_norm"].verdict == NO_REGULARIZATION
    assert math.isnan(found["l2"].p_value) and found["l2"].seeds_to_decide is None
    assert "no regularization selected" in found["max_norm"].text
    assert found["dropout"].verdict == BETTER
    # one test: Holm's m is 1, so the adjusted p is the raw one
    assert found["dropout"].p_adjusted == pytest.approx(found["dropout"].p_value)
    assert dataset_power(list(found.values()))[0].tests == 1


def test_a_near_tie_on_validation_whose_runner_up_gives_another_verdict_is_borderline():
    """The best strength beats the runner-up (λ = 0, the baseline itself) on validation by
    less than a standard error: another draw may select λ = 0, which is no test at all."""
    rows = baseline()
    tie = [0.001, -0.002, 0.002, 0.0, 0.001, -0.001]
    rows += job("signal", "l2", [0.0, 1e-3], lambda s, seed: (BASE[seed] + tie[seed], BASE[seed] + 0.1 + NOISE[seed][1])
                if s else (BASE[seed], BASE[seed]))
    clear = job("signal", "l1", [0.0, 1e-3], lambda s, seed: (BASE[seed] + 0.05, BASE[seed] + 0.1 + NOISE[seed][2])
                if s else (BASE[seed], BASE[seed]))
    found = {f.family: f for f in findings(results(rows + clear))}
    assert found["l2"].strength == 1e-3 and found["l2"].near_tied == [0.0]
    assert "lam = 0, nearly tied with 0.001" in found["l2"].borderline
    assert NO_REGULARIZATION in found["l2"].borderline
    assert found["l1"].near_tied == [] and found["l1"].borderline == "" and found["l1"].verdict == BETTER


def test_an_undetermined_row_says_how_many_seeds_would_decide_it():
    rows = baseline()
    wobble = [0.03, -0.02, 0.04, -0.01, 0.02, 0.0]
    rows += job("signal", "noise", [0.0, 0.1], lambda s, seed: (BASE[seed] + s, BASE[seed] + 0.01 + wobble[seed])
                if s else (BASE[seed], BASE[seed]), name="sigma")
    f = {f.family: f for f in findings(results(rows))}["noise"]
    assert f.verdict == UNDETERMINED
    diffs = 0.01 + np.array(wobble)
    expected = seeds_to_decide(diffs.mean(), diffs.std(ddof=1), 0.02, 0.05 / 1, 0.8)
    assert (f.seeds_to_decide, f.decided_as) == expected
    assert f"About {expected[0]} seeds would likely decide it" in f.text


def test_dataset_power_is_the_detectable_effect_at_alpha_over_m_from_the_pooled_spread():
    rows = baseline()
    spreads = {"l1": [0.01, -0.01, 0.02, 0.0, 0.015, -0.005], "l2": [0.05, -0.04, 0.03, 0.0, -0.02, 0.01]}
    for family, d in spreads.items():
        rows += job("signal", family, [0.0, 1.0], lambda s, seed, d=d: (BASE[seed] + s, BASE[seed] + d[seed])
                    if s else (BASE[seed], BASE[seed]))
    power = dataset_power(findings(results(rows)))[0]
    sd = math.sqrt(np.mean([np.var(d, ddof=1) for d in spreads.values()]))
    assert (power.tests, power.seeds) == (2, len(SEEDS))
    assert power.sd == pytest.approx(sd, rel=1e-12)
    assert power.detectable == pytest.approx(detectable_effect(sd, len(SEEDS), 0.05 / 2, 0.8), rel=1e-12)
    assert f"With {len(SEEDS)} seeds, this study detects on signal effects of at least" in power.text


def test_paired_by_strength_is_each_strengths_paired_difference():
    rows = baseline() + job("signal", "l2", [0.0, 0.1, 1.0], lambda s, seed: (0.5, BASE[seed] - s + NOISE[seed][3] * s))
    r = results(rows)
    table = paired_by_strength(r, findings(r), ("test_metric",))
    for strength in (0.0, 0.1, 1.0):
        diffs = np.array([-strength + NOISE[seed][3] * strength for seed in SEEDS])
        row = table[table["strength"] == strength].iloc[0]
        assert row["mean"] == pytest.approx(diffs.mean(), abs=1e-12)
        # at 0 every difference is 0: the interval is [0, 0]
        lo, hi = (0.0, 0.0) if strength == 0.0 else sps.ttest_1samp(diffs, 0.0).confidence_interval()
        assert (row["lo"], row["hi"]) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))


# --- across datasets ---


def test_aggregates_are_margin_normalized_and_pooled_over_datasets():
    rows = baseline("signal") + baseline("moons", "accuracy")
    gains = {"signal": [0.04, 0.02, 0.06, 0.0, 0.03, -0.01], "moons": [0.01, 0.02, -0.005, 0.0, 0.015, 0.01]}
    for dataset, metric in (("signal", "r2"), ("moons", "accuracy")):
        g = gains[dataset]
        rows += job(dataset, "l2", [0.0, 1.0], lambda s, seed, g=g: (BASE[seed] + s, BASE[seed] + g[seed]) if s else
                    (BASE[seed], BASE[seed]), metric=metric)
    aggregate = family_aggregates(findings(results(rows)))[0]
    normalized = np.concatenate([np.array(gains["signal"]) / 0.02, np.array(gains["moons"]) / 0.01])
    assert aggregate.effect_iqm.mean == pytest.approx(sps.trim_mean(normalized, 0.25))
    improvement = np.mean([(np.sum(np.array(g) > 0) + 0.5 * np.sum(np.array(g) == 0)) / 6 for g in gains.values()])
    assert aggregate.improvement.mean == pytest.approx(improvement)
    assert aggregate.effect_iqm.lo < aggregate.effect_iqm.mean < aggregate.effect_iqm.hi
    assert aggregate.datasets == 2


def test_ranks_are_friedmans_and_nemenyis_and_say_when_nothing_separates():
    import scikit_posthocs as sp

    scores = {"signal": {"none": 0.5, "l1": 0.52, "l2": 0.55}, "moons": {"none": 0.80, "l1": 0.83, "l2": 0.82},
              "sparse": {"none": 0.3, "l1": 0.5, "l2": 0.45}}
    rows = []
    for dataset, by_family in scores.items():
        for family, score in by_family.items():
            rows += job(dataset, family, [0.0 if family == "none" else 1.0],
                        lambda s, seed, score=score: (score, score + NOISE[seed][0]))
    ranks = rank_families(findings(results(rows)))
    table = pd.DataFrame(scores).T[["none", "l1", "l2"]] + np.mean([NOISE[s][0] for s in SEEDS])
    expected = sps.friedmanchisquare(*(table[c] for c in table.columns)).pvalue
    assert ranks.friedman_p == pytest.approx(expected)
    assert ranks.mean_ranks.to_dict() == pytest.approx(table.rank(axis=1, ascending=False).mean().to_dict())
    nemenyi = sp.posthoc_nemenyi_friedman(table.to_numpy())
    assert ranks.nemenyi.to_numpy() == pytest.approx(nemenyi.to_numpy())
    assert ranks.friedman_p >= 0.05 and "cannot tell the 3 families apart" in ranks.text


# --- settings ---


def test_settings_from_params_and_bad_values_named():
    s = settings_from({"alpha": 0.01, "equivalence": {"accuracy": 0.02}})
    assert (s.alpha, s.power, s.margin("accuracy"), s.margin("r2")) == (0.01, 0.8, 0.02, 0.02)
    for bad, message in [({"alpha": 0.7}, r"report.alpha=0.7: allowed a number in \(0, 0.5\)"),
                         ({"alhpa": 0.01}, r"report.alhpa=0.01: allowed one of the settings"),
                         ({"equivalence": {"r2": -1}}, r"report.equivalence.r2=-1"),
                         ({"power": True}, r"report.power=True")]:
        with pytest.raises(SettingsError, match=message):
            settings_from(bad)
    with pytest.raises(SettingsError, match="report.equivalence.auc=None: allowed a margin for every metric"):
        Settings().margin("auc")


def test_the_cli_refuses_a_bad_report_section_with_exit_2(tmp_path, capsys):
    from regstudy_report.__main__ import main

    params = tmp_path / "params.yaml"
    params.write_text("report:\n  alpha: 2\n")
    code = main(["--results", str(tmp_path / "results"), "--data", str(tmp_path), "--out", str(tmp_path / "out"),
                 "--params", str(params)])
    assert code == 2
    err = capsys.readouterr().err
    assert "report.alpha=2" in err and str(params) in err
    assert not (tmp_path / "out").exists()
    assert read_settings(None) == Settings()


# --- edges ---


def test_without_a_baseline_a_family_is_judged_against_its_own_weakest_setting():
    rows = job("signal", "l2", [0.0, 0.1], lambda s, seed: (BASE[seed] + s, BASE[seed] + s + NOISE[seed][0] * s))
    f = findings(results(rows))[0]
    assert (f.comparator.family, f.comparator.strength) == ("l2", 0.0)
    assert "no baseline" in f.comparator.reason and f.verdict == BETTER
    # nor when the baseline trained on no seed
    dead = [dict(r, status="diverged") for r in baseline()]
    f = {f.family: f for f in findings(results(dead + rows))}["l2"]
    assert f.comparator.family == "l2" and f.verdict == BETTER


def test_a_family_with_one_strength_is_tested_at_it():
    rows = baseline() + job("signal", "noise", [0.3], lambda s, seed: (BASE[seed] - 0.2, BASE[seed] - 0.2 + NOISE[seed][0]),
                            name="sigma")
    f = {f.family: f for f in findings(results(rows))}["noise"]
    assert f.strength == 0.3 and (f.chosen == 0.3).all() and f.verdict == "worse"
    assert f.near_tied == [] and f.borderline == ""


@pytest.mark.parametrize("name, strengths, weakest", [("patience", [3.0, 30.0, 300.0], 300.0), ("c", [0.1, 1.0, 100.0], 100.0),
                                                       ("lam", [0.0, 1e-3, 1e-2], 0.0)])
def test_a_tie_on_validation_goes_to_the_weakest_setting(name, strengths, weakest):
    rows = baseline() + job("signal", "fam", strengths, lambda s, seed: (0.5, BASE[seed] + (s == weakest) * 0.0), name=name)
    f = {f.family: f for f in findings(results(rows))}["fam"]
    assert f.strength == weakest and (f.chosen == weakest).all()


def test_a_setting_that_diverged_on_a_seed_is_not_chosen_and_every_diverged_family_is_not_measured():
    rows = baseline() + job("signal", "l2", [0.0, 0.1, 1.0], lambda s, seed: (BASE[seed] + s, BASE[seed] + s))
    for r in rows:
        if r["family"] == "l2" and r["strength"] == 1.0 and r["seed"] == 3:  # the best on validation, but diverged once
            r.update(status="diverged", val_metric=math.nan, test_metric=math.nan)
    f = {f.family: f for f in findings(results(rows))}["l2"]
    assert f.strength == 0.1 and (f.chosen == 0.1).all()
    for r in rows:
        if r["family"] == "l2":
            r.update(status="diverged")
    f = {f.family: f for f in findings(results(rows))}["l2"]
    assert f.verdict == "not measured" and f.strength is None and "no setting trained" in f.text


def test_ranks_name_the_pairs_nemenyi_separates():
    rows = []
    for k, dataset in enumerate(["signal", "moons", "sparse", "digits", "diabetes", "breast_cancer"] * 2):
        for family, score in (("none", 0.2), ("l1", 0.5), ("l2", 0.9)):
            rows += job(f"{dataset}{k}", family, [0.0 if family == "none" else 1.0],
                        lambda s, seed, score=score: (score, score))
    ranks = rank_families(findings(results(rows)))
    assert ranks.friedman_p < 0.05 and {frozenset(p) for p in ranks.separable} >= {frozenset(("none", "l2"))}
    assert "pairs Nemenyi's test separates: " in ranks.text and "none vs l2" in ranks.text


def test_an_early_stopping_that_never_stopped_says_its_gain_is_the_best_epoch():
    rows = baseline() + job("signal", "early_stopping", [10.0, 300.0], lambda s, seed: (BASE[seed] + 0.05 * (s > 100),
                                                                                         BASE[seed] + 0.05 + NOISE[seed][0]),
                            name="patience")
    for r in rows:
        r["epochs_trained"] = 200 if r["family"] == "none" or r["strength"] == 300.0 else 40
    f = {f.family: f for f in findings(results(rows))}["early_stopping"]
    assert f.strength == 300.0 and "no chosen member stopped early" in f.note and f.note in f.text
    for r in rows:
        r["epochs_trained"] = 120 if r.get("strength") == 300.0 and r["family"] != "none" else r["epochs_trained"]
    assert {f.family: f for f in findings(results(rows))}["early_stopping"].note == ""
