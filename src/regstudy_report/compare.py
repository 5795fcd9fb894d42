"""What changed, in words: the findings and claims whose verdict differs between two studies.

    python -m regstudy_report.compare A B [--repo .]

``A`` and ``B`` are git revisions (a commit, a branch, a tag, ``HEAD~1``), DVC experiment
names (``dvc exp show`` lists them; ``dvc.api`` resolves them like revisions) or
``workspace`` (the working tree). At each, ``reports/findings.json`` and
``reports/claims.json`` are read with ``dvc.api.read``. One line per finding or claim row
whose verdict differs, with its numbers before and after (a finding's paired effect and
95% interval; a claim's numbers: means with their intervals, then the rest), then
``N verdicts changed``; nothing else. A row present on one side only changed verdict
from or to ``absent``. Exit 0; a revision that is not one, or a study without the two
files, exit 2, before anything is printed.

A command of its own, not a report section: the report depends on its inputs only, never
on git history.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from regstudy_report.stats import sig, signed

FINDINGS = "reports/findings.json"
CLAIMS = "reports/claims.json"
WORKSPACE = "workspace"  # the working tree, as `dvc exp show` names it
ABSENT = "absent"
_INTERVAL = ("_mean", "_lo", "_hi")  # a claim's number with its 95% interval bounds


@dataclass(frozen=True)
class Row:
    """One verdict of a study: a finding (dataset, family) or a claim row."""

    verdict: str
    numbers: str  # what the verdict rests on, in words: "effect +0.0123 [-0.0031, 0.0277]"


@dataclass(frozen=True)
class Change:
    """A row whose verdict differs between the two studies (``None``: absent on that side)."""

    name: str  # "finding moons l2", "claim l1_exact_zeros breast_cancer:l1_prox-vs-l2"
    before: Row | None
    after: Row | None

    def line(self) -> str:
        """``finding moons l2: undetermined -> better (effect +0.01 [-0.003, 0.03] -> +0.02 [0.004, 0.04])``"""
        verdicts = f"{self.before.verdict if self.before else ABSENT} -> {self.after.verdict if self.after else ABSENT}"
        numbers = f"{self.before.numbers if self.before else ABSENT} -> {self.after.numbers if self.after else ABSENT}"
        return f"{self.name}: {verdicts} ({numbers})"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finding_rows(findings: Mapping) -> dict[str, Row]:
    """Every finding of ``findings.json``, by ``"finding <dataset> <family>"``: its verdict
    and its paired effect (family - comparator, test metric) with the 95% interval."""
    rows = {}
    for dataset, by_family in findings["findings"].items():
        for family, e in by_family.items():
            effect = (f"effect {signed(e.get('effect'))} [{sig(e.get('effect_lo'))}, {sig(e.get('effect_hi'))}]"
                      if e.get("effect") is not None else "effect n/a")
            rows[f"finding {dataset} {family}"] = Row(e["verdict"], effect)
    return rows


def claim_numbers(entry: Mapping) -> str:
    """A claim row's numbers in words: each ``x_mean`` with its ``[x_lo, x_hi]``, then every
    other number (``pairs_differing 3``), in the order of the file; ``none`` without any."""
    parts, seen = [], set()
    for key, value in entry.items():
        if key in seen or not _number(value):
            continue
        stem = key.removesuffix("_mean").removesuffix("_lo").removesuffix("_hi")
        if stem != key and all(f"{stem}{s}" in entry for s in _INTERVAL):
            seen.update(f"{stem}{s}" for s in _INTERVAL)
            mean, lo, hi = (entry[f"{stem}{s}"] for s in _INTERVAL)
            parts.append(f"{stem} {sig(mean)} [{sig(lo)}, {sig(hi)}]")
        else:
            parts.append(f"{key} {sig(value)}")
    return ", ".join(parts) if parts else "none"


def claim_rows(claims: Mapping) -> dict[str, Row]:
    """Every claim row of ``claims.json``, by ``"claim <claim> <dataset>:<variant>"`` (its
    counts, ``verdicts`` and ``fragile``, are not rows)."""
    return {f"claim {claim} {key}": Row(entry["verdict"], claim_numbers(entry))
            for claim, by_key in claims.items() if claim != "verdicts" and isinstance(by_key, Mapping)
            for key, entry in by_key.items()}


def verdict_changes(before: Mapping[str, Row], after: Mapping[str, Row]) -> list[Change]:
    """The rows whose verdict differs (or that one side lacks), in the order of ``before``
    then the rows new in ``after``; a row whose numbers moved under the same verdict is
    not a change."""
    names = [*before, *(n for n in after if n not in before)]
    return [Change(n, before.get(n), after.get(n)) for n in names
            if (before[n].verdict if n in before else None) != (after[n].verdict if n in after else None)]


def count_line(changes: list[Change]) -> str:
    """``"3 verdicts changed"`` (``"1 verdict changed"``)."""
    return f"{len(changes)} verdict{'' if len(changes) == 1 else 's'} changed"


class StudyNotFound(Exception):
    """A revision that is none, or one without the report's JSON files."""


def read_study(rev: str, repo: str = ".") -> dict[str, Row]:
    """Every finding and claim row of the study at ``rev`` (``workspace``: the working tree)."""
    import dvc.api
    from dvc.exceptions import DvcException

    at = None if rev == WORKSPACE else rev
    texts = {}
    for path in (FINDINGS, CLAIMS):
        try:
            texts[path] = dvc.api.read(path, repo=repo, rev=at)
        except DvcException as error:
            raise StudyNotFound(f"revision {rev!r}: cannot read {path} ({error}); allowed: a git revision, "
                                f"a DVC experiment name (dvc exp show) or {WORKSPACE!r}") from error
        except FileNotFoundError as error:
            raise StudyNotFound(f"revision {rev!r}: {path} is not there ({error})") from error
    try:
        findings, claims = json.loads(texts[FINDINGS]), json.loads(texts[CLAIMS])
        return {**finding_rows(findings), **claim_rows(claims)}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise StudyNotFound(f"revision {rev!r}: {FINDINGS} or {CLAIMS} is not the report's JSON ({error!r})") from error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regstudy_report.compare",
        description="Print the findings and claims whose verdict differs between two studies, with their "
                    "numbers before and after, then how many verdicts changed.",
    )
    parser.add_argument("before", help=f"git revision, DVC experiment name or {WORKSPACE!r}")
    parser.add_argument("after", help=f"git revision, DVC experiment name or {WORKSPACE!r}")
    parser.add_argument("--repo", default=".", help="the study's git + DVC repository (default: here)")
    args = parser.parse_args(argv)
    try:
        before, after = read_study(args.before, args.repo), read_study(args.after, args.repo)
    except StudyNotFound as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    changes = verdict_changes(before, after)
    for change in changes:
        print(change.line())
    print(count_line(changes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
