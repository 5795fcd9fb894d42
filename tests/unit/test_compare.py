"""What changed, in words (regstudy_report.compare) on hand-made findings and claims, the
headline's few values (regstudy_report.headline), and the `dvc exp show` flags the docs
quote."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

from regstudy_report.compare import Row, claim_numbers, claim_rows, count_line, finding_rows, verdict_changes
from regstudy_report.headline import EXP_SHOW_FLAGS, count_values, flat_keys, verdict_text

ROOT = Path(__file__).resolve().parents[2]


def finding(verdict: str, effect: float | None, half: float = 0.01) -> dict:
    numbers = {"effect": effect, "effect_lo": None, "effect_hi": None}
    if effect is not None:
        numbers.update(effect_lo=effect - half, effect_hi=effect + half)
    return {"verdict": verdict, "p": 0.5, "strength": 0.1, **numbers}


FINDINGS = {"findings": {
    "moons": {"l2": finding("undetermined", 0.004), "dropout": finding("equivalent", 0.001)},
    "signal": {"l2": finding("better", 0.05), "noise": finding("not measured", None)},
}, "verdicts": {}}
CLAIMS = {
    "adam_l2_is_not_decay": {"moons:l2-vs-weight_decay+Adam": {"pairs_differing": 3.0, "verdict": "reproduced"}},
    "l1_beats_l2_when_sparse": {"sparse:l1-vs-l2": {"delta_hi": 0.3, "delta_lo": 0.1, "delta_mean": 0.2,
                                                    "reason": "words", "verdict": "reproduced"}},
    "verdicts": {"reproduced": 2}, "fragile": 0,
}


def study(findings: dict, claims: dict) -> dict[str, Row]:
    return {**finding_rows(findings), **claim_rows(claims)}


def test_the_same_study_has_no_change():
    assert verdict_changes(study(FINDINGS, CLAIMS), study(FINDINGS, CLAIMS)) == []
    assert count_line([]) == "0 verdicts changed"


def test_numbers_that_move_under_the_same_verdict_are_no_change():
    after = copy.deepcopy(FINDINGS)
    after["findings"]["moons"]["l2"] = finding("undetermined", 0.009, half=0.02)
    claims = copy.deepcopy(CLAIMS)
    claims["l1_beats_l2_when_sparse"]["sparse:l1-vs-l2"]["delta_mean"] = 0.25
    assert verdict_changes(study(FINDINGS, CLAIMS), study(after, claims)) == []


def test_exactly_the_changed_verdicts_are_named_with_their_numbers_before_and_after():
    after, claims = copy.deepcopy(FINDINGS), copy.deepcopy(CLAIMS)
    after["findings"]["moons"]["l2"] = finding("better", 0.03)
    after["findings"]["signal"]["noise"] = finding("worse", -0.04)
    claims["l1_beats_l2_when_sparse"]["sparse:l1-vs-l2"].update(verdict="not reproduced", delta_mean=-0.01,
                                                                 delta_lo=-0.05, delta_hi=0.03)
    changes = verdict_changes(study(FINDINGS, CLAIMS), study(after, claims))
    assert [c.line() for c in changes] == [
        "finding moons l2: undetermined -> better (effect +0.004 [-0.006, 0.014] -> effect +0.03 [0.02, 0.04])",
        "finding signal noise: not measured -> worse (effect n/a -> effect -0.04 [-0.05, -0.03])",
        "claim l1_beats_l2_when_sparse sparse:l1-vs-l2: reproduced -> not reproduced "
        "(delta 0.2 [0.1, 0.3] -> delta -0.01 [-0.05, 0.03])",
    ]
    assert count_line(changes) == "3 verdicts changed"
    assert count_line(changes[:1]) == "1 verdict changed"


def test_a_row_on_one_side_only_changed_from_or_to_absent():
    after = copy.deepcopy(FINDINGS)
    del after["findings"]["moons"]["dropout"]
    after["findings"]["moons"]["noise"] = finding("undetermined", 0.0)
    changes = verdict_changes(study(FINDINGS, CLAIMS), study(after, CLAIMS))
    assert [(c.name, c.before and c.before.verdict, c.after and c.after.verdict) for c in changes] == [
        ("finding moons dropout", "equivalent", None), ("finding moons noise", None, "undetermined")]
    assert changes[0].line().startswith("finding moons dropout: equivalent -> absent (effect +0.001")


def test_a_claims_numbers_read_as_means_with_intervals_then_the_rest():
    entry = {"a_hi": 2.0, "a_lo": 1.0, "a_mean": 1.5, "pairs_same": 3.0, "train_loss_p": 1.5e-39,
             "fragile": "words", "verdict": "reproduced"}
    assert claim_numbers(entry) == "a 1.5 [1, 2], pairs_same 3, train_loss_p 1.5e-39"
    assert claim_numbers({"reason": "why", "verdict": "not testable"}) == "none"
    assert set(claim_rows(CLAIMS)) == {"claim adam_l2_is_not_decay moons:l2-vs-weight_decay+Adam",
                                       "claim l1_beats_l2_when_sparse sparse:l1-vs-l2"}


def test_verdict_text_names_each_label_with_its_count_in_a_fixed_order():
    assert verdict_text(["undetermined", "better", "undetermined", "no regularization selected"]) == \
        "1 better, 2 undetermined, 1 no regularization selected"
    assert verdict_text([]) == "none"


def test_values_are_counted_as_dvc_lists_them():
    metrics = {"moons": {"verdicts": "1 better", "best_effect": None},
               "study": {"findings": {"better": 1}, "members": 4}}
    assert count_values(metrics) == 4
    assert flat_keys(metrics) == {"moons.verdicts": "1 better", "moons.best_effect": None,
                                  "study.findings.better": 1, "study.members": 4}


def test_the_docs_give_the_exp_show_command_the_tests_run():
    """docs/experiments.md quotes headline.EXP_SHOW_FLAGS exactly (the slow test
    tests/integration/test_experiments.py counts its columns on a real study)."""
    command = shlex.join(["dvc", "exp", "show", *EXP_SHOW_FLAGS])
    assert command in (ROOT / "docs" / "experiments.md").read_text()
