"""The literature's claims, each checked against the study's tables.

Each claim is one small pure function of the results (``Results``) and of its
thresholds (:class:`Thresholds`) that returns, for every dataset (and variant) it
applies to, a :class:`ClaimResult`: what was measured, the criterion, the numbers, and
a verdict:

- *reproduced*: every part of the criterion holds, with its 95% interval on the right
  side of the threshold;
- *not reproduced*: some part is contradicted (its interval lies on the wrong side);
- *inconclusive*: no part is contradicted, but some interval straddles its threshold;
- *not testable*: the method compared cannot produce the effect (subgradient steps
  never give exact zeros), or no setting of the grid lies in the claim's domain; the
  reason is given;
- *not measured*: the families or data the claim needs are not in the study.

Every claim is then re-run with each threshold moved on its own (:data:`VARIANTS`: the
metric tolerance, the near-zero threshold, the margins, matching on the loss instead
of the metric, the domain's bound); a row whose verdict changes is *fragile*, and says
under which thresholds it reads otherwise.

Comparisons pair members by seed (same data draw and initialization); intervals are
those of :mod:`regstudy_report.stats`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Callable

import numpy as np
import pandas as pd

from regstudy_report.findings import by_seed
from regstudy_report.stats import Interval, effect_text, estimate, mean_interval, near_ties, paired_difference, sig, trend
from regstudy_report.tables import (
    LOSS_TOL,
    METRIC_TOL,
    Results,
    best_strength,
    matched_strength,
    ok_rows,
    stronger_is_smaller,
)

# the base thresholds (Thresholds below moves each)
MEAN_FLAT = 0.1  # predictions' spread over the inputs below 10% of the true function's: "predicts the mean"
MEAN_R2 = 0.1  # without prediction tables: |test R²| below this
SPIKE_SPREAD = 0.01  # trained kernel std below 1% of the initial std: a spike (as in the KDE figure)
P_TREND = 0.05  # significance of a rank correlation
#: Families with a proximal (soft-threshold) step: the only ones that set weights or
#: whole units to exactly 0. Subgradient steps, under Adam or SGD, leave them jittering.
PROXIMAL = ("l1_prox", "elastic_net_prox", "group_lasso_prox")

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTABLE, NOT_MEASURED = (
    "reproduced", "not reproduced", "inconclusive", "not testable", "not measured")
CLAIM_VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTABLE, NOT_MEASURED)


@dataclass(frozen=True)
class Thresholds:
    """The thresholds of the claims' criteria (each printed with its criterion)."""

    metric_tol: float = METRIC_TOL  # metric units: "matched", "barely moves"
    match_on: str = "metric"  # matched strength by validation metric, or by validation "loss"
    loss_tol: float = LOSS_TOL  # matching on the loss: within this fraction of strength 0's
    # the near-zero column: |w| < τ·rms (τ: the job's zero_threshold), or its _strict / _loose twin
    near_zero: str = "near_zero_fraction"
    fraction_margin: float = 0.1  # "many more" zeros or removed units: at least this fraction of all more
    norm_tol: float = math.log(1.05)  # "the same weights": norms within 5% (as a log ratio)
    decay_domain: float = 1e-2  # normalization claim: λ·η at most this (weights shrink ≤ 1% a step by decay)
    mean_flat: float = MEAN_FLAT  # "predicts the mean": the prediction's spread below this share of the truth's
    mean_r2: float = MEAN_R2  # ... or, without prediction tables, |test R²| below this
    spike_spread: float = SPIKE_SPREAD  # "a spike at 0": trained/initial kernel spread below this
    p_trend: float = P_TREND  # "rises with": Spearman's rank correlation at p below this
    # which strength stands for "its best validation setting": the best, or, where others
    # nearly tie it on validation (stats.near_ties), the next best or the weakest of them
    choose: str = "best"


BASE = Thresholds()
#: Each threshold moved on its own, with a label for the report.
VARIANTS: dict[str, Thresholds] = {
    "metric tolerance 0.01": replace(BASE, metric_tol=0.01),
    "metric tolerance 0.05": replace(BASE, metric_tol=0.05),
    "matched on validation loss (within 10%)": replace(BASE, match_on="loss"),
    "near-zero threshold τ/10": replace(BASE, near_zero="near_zero_fraction_strict"),
    "near-zero threshold 10τ": replace(BASE, near_zero="near_zero_fraction_loose"),
    "margin 0.05": replace(BASE, fraction_margin=0.05),
    "margin 0.2": replace(BASE, fraction_margin=0.2),
    "norm tolerance 2%": replace(BASE, norm_tol=math.log(1.02)),
    "norm tolerance 10%": replace(BASE, norm_tol=math.log(1.10)),
    "domain λ·η ≤ 1e-3": replace(BASE, decay_domain=1e-3),
    "domain λ·η ≤ 0.1": replace(BASE, decay_domain=1e-1),
    "flatness 0.05": replace(BASE, mean_flat=0.05, mean_r2=0.05),
    "flatness 0.2": replace(BASE, mean_flat=0.2, mean_r2=0.2),
    "spike 0.005": replace(BASE, spike_spread=0.005),
    "spike 0.02": replace(BASE, spike_spread=0.02),
    "trend p < 0.01": replace(BASE, p_trend=0.01),
    "trend p < 0.1": replace(BASE, p_trend=0.1),
    "the next best of a near tie on validation": replace(BASE, choose="next"),
    "the weakest of a near tie on validation": replace(BASE, choose="weakest"),
}


@dataclass
class ClaimResult:
    claim: str  # the claim's id (its function's name)
    dataset: str
    variant: str  # what was compared, e.g. "l1_prox vs l2"
    verdict: str
    measurement: str  # in words, with the numbers
    numbers: dict[str, float] = field(default_factory=dict)
    reason: str = ""  # why it is not testable
    variants: dict[str, str] = field(default_factory=dict)  # verdict under each threshold variant that differs
    fragile: str = ""  # in words: the verdicts it takes as the thresholds move, or ""

    @property
    def key(self) -> str:
        """``<dataset>:<what was compared>`` without spaces or parentheses, e.g.
        ``signal:l2-vs-weight_decay+Adam`` (a plain key for JSON and `dvc metrics`)."""
        if not self.variant:
            return self.dataset
        slug = re.sub(r"\s*\([^)]*\)", "", self.variant)
        slug = slug.replace(" vs ", "-vs-").replace(", ", "+").replace(" > ", ">").replace(" ", "_")
        return f"{self.dataset}:{slug}"


@dataclass
class Claim:
    id: str
    statement: str
    source: str
    criterion: str
    check: Callable[..., list[ClaimResult]]  # (results, thresholds) -> one result per dataset and variant
    uses: tuple[str, ...] = ()  # the Thresholds fields its criterion reads (the variants worth re-running)


# --- three-valued parts of a criterion: True (holds), False (contradicted), None (undecided) ---


def above(iv: Interval, threshold: float) -> bool | None:
    """The mean is above ``threshold``: True if the interval is above it, False if below."""
    if not iv.defined:
        return None
    return True if iv.lo > threshold else False if iv.hi < threshold else None


def below(iv: Interval, threshold: float) -> bool | None:
    if not iv.defined:
        return None
    return True if iv.hi < threshold else False if iv.lo > threshold else None


def inside(iv: Interval, low: float, high: float) -> bool | None:
    """The mean is in ``[low, high]``: True if the interval is inside, False if wholly outside."""
    if not iv.defined:
        return None
    return True if iv.within(low, high) else False if iv.hi < low or iv.lo > high else None


def rising(x, y, p_trend: float = P_TREND) -> tuple[bool | None, float, float]:
    """``y`` rises with ``x``: Spearman's rho > 0 at p < ``p_trend`` (False if it falls)."""
    rho, p = trend(x, y)
    if not (math.isfinite(rho) and p < p_trend):
        return None, rho, p
    return rho > 0, rho, p


def verdict(parts: list[bool | None], matched: tuple = ()) -> str:
    """Combine the parts of a criterion; *not measured* when a matched strength is missing
    (a family without strength-0 members to match against)."""
    if any(m is None or (isinstance(m, float) and math.isnan(m)) for m in matched):
        return NOT_MEASURED
    if any(p is False for p in parts):
        return NOT_REPRODUCED
    return REPRODUCED if parts and all(p is True for p in parts) else INCONCLUSIVE


def _word(part: bool | None) -> str:
    return {True: "holds", False: "fails", None: "undecided"}[part]


# --- selecting members ---


def job(r: Results, dataset: str, family: str) -> pd.DataFrame:
    return r.job(dataset, family)


#: Per-member columns computed from members.csv.
DERIVED = {"removed_fraction": lambda rows: 1 - rows["alive_neurons"] / rows["total_neurons"]}


def seeds_at(rows: pd.DataFrame, strength, column: str) -> pd.Series:
    """``column`` of the ok members at ``strength``, indexed by seed; empty without a
    strength (a family whose every setting diverged on some seed)."""
    if strength is None or (isinstance(strength, float) and math.isnan(strength)):
        return pd.Series(dtype=float, name=column)
    rows = rows[np.isclose(rows["strength"], strength)]
    if column in DERIVED:
        rows = rows.assign(**{column: DERIVED[column](rows)})
    return by_seed(rows, column)


def datasets_with(r: Results, *families: str) -> list[str]:
    return [d for d in r.datasets if all(len(job(r, d, f)) for f in families)]


def _missing(claim: str, needs: str) -> list[ClaimResult]:
    return [ClaimResult(claim, "any", "", NOT_MEASURED, f"needs {needs}, which the study does not have")]


def _diverged(claim: str, dataset: str, variant: str, family: str) -> ClaimResult:
    """A claim that needs a family none of whose settings trained on every seed."""
    return ClaimResult(claim, dataset, variant, NOT_MEASURED,
                       f"not measured: no setting of {family} trained on every seed without diverging")


def _iv(prefix: str, iv: Interval) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in iv.as_dict().items() if k != "n"}


# --- the claims ---


def _regression_or_first(r: Results, family: str) -> list[str]:
    """Where to check the texts' sweeps: their dataset (signal), else the regression sets."""
    have = datasets_with(r, family)
    if "signal" in have:
        return ["signal"]
    return [d for d in have if (job(r, d, family)["task"] == "regression").all()]


def _spread_ratio(r: Results, dataset: str, family: str, strength) -> pd.Series:
    """Per seed: std of the trained kernel sample over std of the initial one."""
    rows = _kernels(r, dataset, family, strength)
    spread = rows.groupby(["seed", "when"])["value"].std().unstack("when")
    return (spread["final"] / spread["init"]).dropna() if len(spread) else pd.Series(dtype=float)


def _flatness(r: Results, dataset: str, family: str, strength) -> pd.Series:
    """Per seed: std of the trained function over the plotting grid over the std of the true
    function there (``grid_f``; else of the training targets). 0 for a constant prediction."""
    pred = r.predictions.get(dataset)
    data = r.data.get(dataset, {})
    reference = data.get("grid_f", data.get("y_train"))
    if pred is None or "y_pred" not in pred or reference is None:
        return pd.Series(dtype=float)
    rows = ok_rows(pred[pred["family"] == family], r.members)
    rows = rows[np.isclose(rows["strength"], strength)]
    return (rows.groupby("seed")["y_pred"].std(ddof=0) / float(np.std(reference))).sort_index()


def _predicts_the_mean(r: Results, rows: pd.DataFrame, d: str, family: str, strength,
                       t: Thresholds = BASE) -> tuple[bool | None, str, dict]:
    """Whether the model at ``strength`` predicts roughly a constant: the flatness of its
    function (below ``t.mean_flat``) where prediction tables exist, else |test R²| below
    ``t.mean_r2``."""
    flat = mean_interval(_flatness(r, d, family, strength))
    if flat.n:
        return (below(flat, t.mean_flat), f"spread of the prediction / of the true function at {sig(strength)}: "
                f"{estimate(flat)}", _iv(f"flatness_{family}", flat))
    r2 = mean_interval(seeds_at(rows, strength, "test_metric"))
    return (inside(r2, -t.mean_r2, t.mean_r2), f"test R² at {sig(strength)}: {estimate(r2)}",
            _iv(f"test_r2_{family}", r2))


def texts_l2_sweep(r: Results, t: Thresholds = BASE) -> list[ClaimResult]:
    out = []
    for d in _regression_or_first(r, "l2"):
        rows = job(r, d, "l2")
        ok = rows[rows["status"] == "ok"]
        strengths = sorted(ok["strength"].unique())
        positive = [s for s in strengths if s > 0]
        if ok.empty:
            out.append(_diverged("texts_l2_sweep", d, "l2", "l2"))
            continue
        if 0.0 not in strengths or not positive:
            out += _missing("texts_l2_sweep", "l2 with strength 0 and positive strengths")
            continue
        small, top = positive[0], positive[-1]
        kept = paired_difference(seeds_at(rows, small, "test_metric"), seeds_at(rows, 0.0, "test_metric"))
        rises, rho, p = rising(ok["strength"], ok["train_loss"], t.p_trend)
        flat, flat_text, flat_numbers = _predicts_the_mean(r, rows, d, "l2", top, t)
        spike_at = 1.0 if 1.0 in strengths else top
        spread = mean_interval(_spread_ratio(r, d, "l2", spike_at))
        parts = [above(kept, -t.metric_tol), rises, flat, below(spread, t.spike_spread)]
        text = (f"smallest λ={sig(small)} against λ=0: Δ test R² {effect_text(kept)} "
                f"(fit kept: {_word(parts[0])}); training loss against λ: Spearman ρ={sig(rho)}, p={sig(p)} "
                f"(rises: {_word(parts[1])}); {flat_text} (predicts the mean: {_word(parts[2])}); "
                f"trained/initial kernel spread at λ={sig(spike_at)}: {estimate(spread)} "
                f"(spike at 0: {_word(parts[3])})")
        out.append(ClaimResult("texts_l2_sweep", d, "l2", verdict(parts), text,
                               {**_iv("fit_kept_delta", kept), "train_loss_rho": rho, "train_loss_p": p,
                                **flat_numbers, **_iv("spread_ratio", spread)}))
    return out or _missing("texts_l2_sweep", "family l2 on a regression dataset")


def texts_dropout_sweep(r: Results, t: Thresholds = BASE) -> list[ClaimResult]:
    out = []
    for d in _regression_or_first(r, "dropout"):
        rows = job(r, d, "dropout")
        ok = rows[rows["status"] == "ok"]
        strengths = sorted(ok["strength"].unique())
        if ok.empty:
            out.append(_diverged("texts_dropout_sweep", d, "dropout", "dropout"))
            continue
        if len(strengths) < 3:
            out += _missing("texts_dropout_sweep", "dropout at three or more p")
            continue
        rises, rho, p = rising(ok["strength"], ok["train_loss"], t.p_trend)
        near = min(strengths, key=lambda s: abs(s - 0.6))
        flat, flat_text, flat_numbers = _predicts_the_mean(r, rows, d, "dropout", near, t)
        parts = [rises, flat]
        text = (f"training loss against p: Spearman ρ={sig(rho)}, p-value={sig(p)} (rises: {_word(parts[0])}); "
                f"{flat_text} (about the mean: {_word(parts[1])})")
        numbers = {"train_loss_rho": rho, "train_loss_p": p, **flat_numbers}
        if 1.0 in strengths:
            one = _init_final(_kernels(r, d, "dropout", 1.0))
            moved = float(np.nanmax(np.abs(one["final"] - one["init"]))) if len(one) else math.nan
            parts.append(None if not math.isfinite(moved) else moved == 0.0)
            text += f"; largest |trained − initial| kernel weight at p=1: {sig(moved)} (initial kept: {_word(parts[-1])})"
            numbers["p1_max_kernel_change"] = moved
        out.append(ClaimResult("texts_dropout_sweep", d, "dropout", verdict(parts), text, numbers))
    return out or _missing("texts_dropout_sweep", "family dropout on a regression dataset")


def _kernels(r: Results, dataset: str, family: str, strength: float) -> pd.DataFrame:
    """The sampled kernel entries of a family's members that ended ok, at one strength.
    The job's rows are picked before ``ok_rows`` joins them: the params table holds
    millions of rows, and joining it whole doubled the report's memory."""
    p = r.params
    p = ok_rows(p[(p["dataset"] == dataset) & (p["family"] == family) & (p["kind"] == "kernel")], r.members)
    return p[np.isclose(p["strength"], strength)]


def _init_final(rows: pd.DataFrame) -> pd.DataFrame:
    """Kernel entries (:func:`_kernels`), init and final side by side."""
    if rows.empty:
        return pd.DataFrame(columns=["init", "final"])
    rows = rows.assign(entry=rows.groupby(["member", "layer", "when"]).cumcount())
    return rows.pivot_table(index=["member", "layer", "entry"], columns="when", values="value")


def chosen_strength(rows: pd.DataFrame, t: Thresholds = BASE):
    """The strength standing for a job's best validation setting (:func:`best_strength`),
    or under ``t.choose``, where other strengths nearly tie it on validation (within a
    standard error, :func:`stats.near_ties`), the best of those (``"next"``) or the weakest
    of them all (``"weakest"``): a verdict that changes then hangs on a near tie."""
    best = best_strength(rows)
    if t.choose == "best" or best is None:
        return best
    strengths = sorted(rows["strength"].dropna().unique(), reverse=stronger_is_smaller(str(rows["strength_name"].iloc[0])))
    ok = rows[rows["status"] == "ok"]
    val = ok.pivot_table(index="seed", columns="strength", values="val_metric", aggfunc="first").reindex(
        columns=strengths).to_numpy(dtype=float)
    ties = near_ties(val, strengths.index(best))
    if not ties:
        return best
    if t.choose == "weakest":
        return strengths[min([*ties, strengths.index(best)])]
    means = np.nanmean(val, axis=0)
    return strengths[max(ties, key=lambda j: means[j])]


def _matched(rows: pd.DataFrame, t: Thresholds):
    return matched_strength(rows, t.metric_tol, t.match_on, t.loss_tol)


def _paired_at_matched(r: Results, d: str, a: str, b: str, column: str,
                       t: Thresholds = BASE) -> tuple[Interval, float, float]:
    """``column`` of family a minus family b, each at its matched strength, paired by seed."""
    ja, jb = job(r, d, a), job(r, d, b)
    sa, sb = _matched(ja, t), _matched(jb, t)
    if sa is None or sb is None or not all(column in j or column in DERIVED for j in (ja, jb)):
        return Interval(math.nan, math.nan, math.nan, 0), math.nan if sa is None else sa, math.nan if sb is None else sb
    return paired_difference(seeds_at(ja, sa, column), seeds_at(jb, sb, column)), sa, sb


def _matched_words(t: Thresholds) -> str:
    return (f"matched validation metric (within {t.metric_tol})" if t.match_on == "metric" else
            f"matched validation loss (within {sig(100 * t.loss_tol)}%)")


def _not_testable(claim: str, d: str, variant: str, family: str, optimizer: str) -> ClaimResult:
    reason = (f"{family} takes subgradient steps (under {optimizer}), which do not set weights or units to "
              f"exactly 0; the claim is about proximal or coordinate methods (its _prox variant tests it)")
    return ClaimResult(claim, d, variant, NOT_TESTABLE, f"not testable: {reason}", reason=reason)


def _optimizer(r: Results, d: str, family: str) -> str:
    rows = job(r, d, family)
    return str(rows["optimizer"].iloc[0]) if "optimizer" in rows and len(rows) else "its optimizer"


def _relative_threshold(r: Results, d: str, family: str, column: str) -> str:
    """The near-zero threshold of a column, relative to each layer's rms, in words."""
    rows = job(r, d, family)
    tau = rows["zero_threshold"].dropna().unique() if "zero_threshold" in rows else []
    factor = {"near_zero_fraction_strict": 0.1, "near_zero_fraction_loose": 10.0}.get(column, 1.0)
    return f"|w| < {sig(factor * tau[0])}·rms of its layer" if len(tau) else "|w| near 0"


def texts_sparsity_order(r: Results, t: Thresholds = BASE) -> list[ClaimResult]:
    out = []
    for l1, en, l2, column in [("l1", "elastic_net", "l2", t.near_zero),
                               ("l1_prox", "elastic_net_prox", "l2", "exact_zero_fraction")]:
        for d in datasets_with(r, l1, en, l2):
            what = ("exactly zero" if column == "exact_zero_fraction" else
                    f"near-zero ({_relative_threshold(r, d, l1, column)})")
            first, s1, se = _paired_at_matched(r, d, l1, en, column, t)
            second, _, s2 = _paired_at_matched(r, d, en, l2, column, t)
            parts = [above(first, 0.0), above(second, 0.0)]
            text = (f"fraction of {what} kernel weights at {_matched_words(t)} "
                    f"({l1} λ={sig(s1)}, {en} λ={sig(se)}, {l2} λ={sig(s2)}): {l1} − {en} "
                    f"{effect_text(first)}, {en} − {l2} {effect_text(second)}")
            out.append(ClaimResult("texts_sparsity_order", d, f"{l1} > {en} > {l2}", verdict(parts, (s1, se, s2)), text,
                                   {**_iv("l1_minus_en", first), **_iv("en_minus_l2", second)}))
    return out or _missing("texts_sparsity_order", "families l1, elastic_net and l2")


def l1_exact_zeros(r: Results, t: Thresholds = BASE) -> list[ClaimResult]:
    out = []
    for l1 in ("l1", "l1_prox"):
        for d in datasets_with(r, l1, "l2"):
            if l1 not in PROXIMAL:
                out.append(_not_testable("l1_exact_zeros", d, f"{l1} vs l2", l1, _optimizer(r, d, l1)))
                continue
            diff, s1, s2 = _paired_at_matched(r, d, l1, "l2", "exact_zero_fraction", t)
            part = above(diff, t.fraction_margin)
            text = (f"exactly-zero kernel weights at {_matched_words(t)} ({l1} λ={sig(s1)}, l2 λ={sig(s2)}): "
                    f"{l1} − l2 = {effect_text(diff)} of all kernel weights")
            out.append(ClaimResult("l1_exact_zeros", d, f"{l1} vs l2", verdict([part], (s1, s2)), text,
                                   _iv("delta", diff)))
    return out or _missing("l1_exact_zeros", "families l1 (or l1_prox) and l2")


def _normalized_layers(r: Results, d: str, family: str) -> pd.DataFrame:
    """Per member at its kept epoch: ‖W‖ of the normalized layers together and their mean η/‖W‖²
    (computed once per study, dataset and family)."""
    key = ("normalized_layers", d, family)
    if key not in r.memo:
        r.memo[key] = _normalized_layers_of(r, d, family)
    return r.memo[key]


def _normalized_layers_of(r: Results, d: str, family: str) -> pd.DataFrame:
    lay, mem = r.layers, job(r, d, family)
    mem = mem[mem["status"] == "ok"]
    rows = lay[(lay["dataset"] == d) & (lay["family"] == family) & lay["effective_lr"].notna()]
    kept = mem[["member", "best_epoch"]].rename(columns={"best_epoch": "epoch"})
    rows = rows.merge(kept, on=["member", "epoch"])
    if rows.empty:
        return pd.DataFrame(columns=["seed", "strength", "norm", "effective_lr"])
    agg = rows.assign(sq=rows["weight_norm"] ** 2).groupby(["member", "seed", "strength"], as_index=False).agg(
        sq=("sq", "sum"), effective_lr=("effective_lr", "mean"))
    return agg.assign(norm=np.sqrt(agg["sq"]))


def decoupled(rows: pd.DataFrame) -> bool:
    """The job sweeps decoupled weight decay (``w ← w − η·λ·w`` after each step)."""
    return "sweep" in rows and (rows["sweep"] == "weight_decay").all()


def in_decay_domain(rows: pd.DataFrame, strength: float, bound: float) -> bool:
    """For decoupled decay, λ·η of a strength at most ``bound``: the weights shrink by at
    most that fraction a step (η: the job's learning rate). L2 in the loss has no such
    bound under Adam, which rescales its gradient: every λ of its grid is in the domain."""
    lr = rows["lr"].dropna() if "lr" in rows else pd.Series(dtype=float)
    return not decoupled(rows) or lr.empty or strength * float(lr.max()) <= bound


def normalization_scale_invariance(r: Results, t: Thresholds = BASE) -> list[ClaimResult]:
    out = []
    for family in ("batchnorm_l2", "layernorm_weight_decay"):
        for d in datasets_with(r, family):
            rows = job(r, d, family)
            strengths = sorted(rows.loc[rows["status"] == "ok", "strength"].unique())
            positive = [s for s in strengths if s > 0 and in_decay_domain(rows, s, t.decay_domain)]
            if 0.0 not in strengths:
                continue
            if not positive:
                reason = f"no λ > 0 of the grid has λ·η ≤ {sig(t.decay_domain)}, the moderate decay the claim is about"
                out.append(ClaimResult("normalization_scale_invariance", d, family, NOT_TESTABLE,
                                       f"not testable: {reason}", reason=reason))
                continue
            left_out = [s for s in strengths if s > 0 and s not in positive]
            base = seeds_at(rows, 0.0, "val_metric")
            moves = {s: paired_difference(seeds_at(rows, s, "val_metric"), base) for s in positive}
            flat = [inside(iv, -t.metric_tol, t.metric_tol) for iv in moves.values()]
            flat_part = False if False in flat else (True if all(p is True for p in flat) else None)
            stats = _normalized_layers(r, d, family)
            top = positive[-1]
            log_norm = stats.assign(v=np.log(stats["norm"])).set_index(["strength", "seed"])["v"]
            log_lr = stats.assign(v=np.log(stats["effective_lr"])).set_index(["strength", "seed"])["v"]

            def change(series):
                if series.empty or top not in series.index.get_level_values(0):
                    return Interval(math.nan, math.nan, math.nan, 0)
                return paired_difference(series.loc[top], series.loc[0.0])

            dn, dlr = change(log_norm), change(log_lr)
            parts = [flat_part, below(dn, 0.0), above(dlr, 0.0)]
            worst = max(moves.items(), key=lambda kv: abs(kv[1].mean))
            held = [lam for lam, part in zip(moves, flat) if part is True]
            upto = [lam for i, lam in enumerate(moves) if all(f is True for f in flat[: i + 1])]
            held_text = (f"within ±{t.metric_tol} up to λ={sig(upto[-1])}" if upto else
                         f"within ±{t.metric_tol} at {len(held)} of {len(moves)} λ")
            domain = ((f"decoupled decay at λ·η ≤ {sig(t.decay_domain)}"
                       + (f" (λ = {', '.join(sig(s) for s in left_out)} outside it)" if left_out else ""))
                      if decoupled(rows) else "L2 in the loss, every λ of the grid")
            text = (f"within the claim's domain, {domain}: validation metric against λ=0: {held_text}, largest move "
                    f"at λ={sig(worst[0])}: {effect_text(worst[1])} (within ±{t.metric_tol} at every λ: "
                    f"{_word(parts[0])}); log(‖W‖ at λ={sig(top)} / at λ=0) of the normalized layers: {effect_text(dn)}"
                    f" (falls: {_word(parts[1])}); log ratio of η/‖W‖²: {effect_text(dlr)}"
                    f" (rises: {_word(parts[2])})")
            out.append(ClaimResult("normalization_scale_invariance", d, family, verdict(parts), text,
                                   {**_iv("largest_val_move", worst[1]), **_iv("log_norm_ratio", dn),
                                    **_iv("log_effective_lr_ratio", dlr)}))
    return out or _missing("normalization_scale_invariance", "family batchnorm_l2 with strength 0")


def _decay_pairs(r: Results, d: str, l2: str, wd: str) -> list[tuple[float, Interval, Interval]]:
    """(l2's λ, Δ val metric, Δ log ‖W‖) for each l2 λ > 0 whose decoupled twin 2λ is in wd's grid."""
    jl, jw = job(r, d, l2), job(r, d, wd)
    grid_w = set(jw["strength"].round(12))
    pairs = []
    for lam in sorted(s for s in jl["strength"].unique() if s > 0 and round(2 * s, 12) in grid_w):
        dv = paired_difference(seeds_at(jl, lam, "val_metric"), seeds_at(jw, 2 * lam, "val_metric"))
        dn = paired_difference(np.log(seeds_at(jl, lam, "weight_norm")), np.log(seeds_at(jw, 2 * lam, "weight_norm")))
        pairs.append((lam, dv, dn))
    return pairs


def _pairs_text(pairs) -> str:
    return "; ".join(f"λ={sig(lam)} vs {sig(2 * lam)}: Δ val {effect_text(dv)}, "
                     f"Δ log‖W‖ {effect_text(dn)}" for lam, dv, dn in pairs)


def _same(dv: Interval, dn: Interval, t: Thresholds) -> bool | None:
    parts = [inside(dv, -t.metric_tol, t.metric_tol), inside(dn, -t.norm_tol, t.norm_tol)]
    return False if False in parts else (True if all(p is True for p in parts) else None)


def adam_l2_is_not_decay(r: Results, t: Thresholds = BASE) -> list[ClaimResult]:
    out = []
    for d in datasets_with(r, "l2", "weight_decay"):
        pairs = _decay_pairs(r, d, "l2", "weight_decay")
        if not pairs:
            continue
        same = [_same(dv, dn, t) for _, dv, dn in pairs]
        part = True if False in same else (False if all(s is True for s in same) else None)
        out.append(ClaimResult("adam_l2_is_not_decay", d, "l2 (λ) vs weight_decay (2λ), Adam", verdict([part]),
                               _pairs_text(pairs), {"pairs_differing": float(sum(s is False for s in same))}))
    return out or _missing("adam_l2_is_not_decay", "families l2 and weight_decay with λ_decay = 2 λ_l2 in both grids")


def sgd_l2_is_decay(r: Results, t: Thresholds = BASE) -> list[ClaimResult]:
    out = []
    for d in datasets_with(r, "l2_sgd", "weight_decay_sgd"):
        pairs = _decay_pairs(r, d, "l2_sgd", "weight_decay_sgd")
        if not pairs:
            continue
        same = [_same(dv, dn, t) for _, dv, dn in pairs]
        out.append(ClaimResult("sgd_l2_is_decay", d, "l2_sgd (λ) vs weight_decay_sgd (2λ)", verdict(same),
                               _pairs_text(pairs), {"pairs_same": float(sum(s is True for s in same))}))
    return out or _missing("sgd_l2_is_decay", "the SGD control families l2_sgd and weight_decay_sgd")


def group_lasso_removes_units(r: Results, t: Thresholds = BASE) -> list[ClaimResult]:
    out = []
    for gl, l1 in (("group_lasso", "l1"), ("group_lasso_prox", "l1_prox")):
        for d in datasets_with(r, gl, l1, "l2"):
            if gl not in PROXIMAL:
                out.append(_not_testable("group_lasso_removes_units", d, f"{gl} vs {l1}, l2", gl, _optimizer(r, d, gl)))
                continue
            vs_l1, sg, s1 = _paired_at_matched(r, d, gl, l1, "removed_fraction", t)
            vs_l2, _, s2 = _paired_at_matched(r, d, gl, "l2", "removed_fraction", t)
            parts = [above(vs_l1, t.fraction_margin), above(vs_l2, t.fraction_margin)]
            text = (f"fraction of hidden units removed (output exactly constant over the training set) at "
                    f"{_matched_words(t)} ({gl} λ={sig(sg)}, {l1} λ={sig(s1)}, l2 λ={sig(s2)}): {gl} − {l1} "
                    f"{effect_text(vs_l1)}, {gl} − l2 {effect_text(vs_l2)}")
            out.append(ClaimResult("group_lasso_removes_units", d, f"{gl} vs {l1}, l2", verdict(parts, (sg, s1, s2)), text,
                                   {**_iv("vs_l1", vs_l1), **_iv("vs_l2", vs_l2)}))
    return out or _missing("group_lasso_removes_units", "families group_lasso, l1 and l2")


def sparse_datasets(r: Results) -> list[str]:
    """Datasets whose generator marks fewer than half of the features relevant."""
    out = []
    for d in r.datasets:
        relevant = r.data.get(d, {}).get("feature_relevant")
        if relevant is not None and len(relevant) and relevant.mean() < 0.5:
            out.append(d)
    return out


def l1_beats_l2_when_sparse(r: Results, t: Thresholds = BASE) -> list[ClaimResult]:
    out = []
    for l1 in ("l1", "l1_prox"):
        for d in [d for d in sparse_datasets(r) if d in datasets_with(r, l1, "l2")]:
            j1, j2 = job(r, d, l1), job(r, d, "l2")
            b1, b2 = chosen_strength(j1, t), chosen_strength(j2, t)
            if b1 is None or b2 is None:
                out.append(_diverged("l1_beats_l2_when_sparse", d, f"{l1} vs l2", l1 if b1 is None else "l2"))
                continue
            diff = paired_difference(seeds_at(j2, b2, "test_loss"), seeds_at(j1, b1, "test_loss"))
            text = (f"test MSE at each family's best validation setting ({l1} λ={sig(b1)}, l2 λ={sig(b2)}): "
                    f"l2 − {l1} = {effect_text(diff)}")
            out.append(ClaimResult("l1_beats_l2_when_sparse", d, f"{l1} vs l2", verdict([above(diff, 0.0)]), text,
                                   _iv("l2_minus_l1_test_mse", diff)))
    return out or _missing("l1_beats_l2_when_sparse", "a dataset with known irrelevant features and families l1, l2")


def block_spread(features: pd.DataFrame) -> pd.Series:
    """Per member: the share of each relevant block's features in use, averaged over blocks.

    For a block with feature norms ``n_j``, the participation ratio ``(sum n_j)^2 / sum n_j^2``
    (from 1 when one feature carries all the weight, to the block size when all carry the
    same) divided by the block size; 0 for a block whose features are all dropped.
    """
    blocks = features.dropna(subset=["block"])
    g = blocks.assign(sq=blocks["norm"] ** 2).groupby(["member", "block"])
    total, sq, size = g["norm"].sum(), g["sq"].sum(), g["norm"].size()
    ratio = (total**2 / sq.where(sq > 0)).fillna(0.0) / size
    return ratio.groupby("member").mean()


def elastic_net_groups(r: Results, t: Thresholds = BASE) -> list[ClaimResult]:
    out = []
    for en, l1 in (("elastic_net", "l1"), ("elastic_net_prox", "l1_prox")):
        for d in datasets_with(r, en, l1):
            f = r.features
            spread = {}
            for fam in (en, l1):
                rows = job(r, d, fam)
                best = chosen_strength(rows, t)
                feats = ok_rows(f[(f["dataset"] == d) & (f["family"] == fam)], rows) if len(f) else f
                if best is None or feats.empty or feats["block"].notna().sum() == 0:
                    break
                share = block_spread(feats[np.isclose(feats["strength"], best)])
                seeds = rows.set_index("member")["seed"]
                spread[fam] = (best, pd.Series(share.values, index=seeds.loc[share.index].values).sort_index())
            if len(spread) < 2:
                continue
            diff = paired_difference(spread[en][1], spread[l1][1])
            e_iv, l_iv = mean_interval(spread[en][1]), mean_interval(spread[l1][1])
            text = (f"share of each correlated block's features in use (participation ratio / block size) at the "
                    f"best validation setting: {en} (λ={sig(spread[en][0])}) {estimate(e_iv)}, "
                    f"{l1} (λ={sig(spread[l1][0])}) {estimate(l_iv)}; difference "
                    f"{effect_text(diff)}")
            out.append(ClaimResult("elastic_net_groups", d, f"{en} vs {l1}", verdict([above(diff, t.fraction_margin)]),
                                   text, {**_iv("delta", diff), **_iv(en, e_iv), **_iv(l1, l_iv)}))
    return out or _missing("elastic_net_groups", "a dataset with known feature blocks and families elastic_net, l1")


def max_norm_helps_dropout(r: Results, t: Thresholds = BASE) -> list[ClaimResult]:
    out = []
    for d in datasets_with(r, "dropout_max_norm"):
        rows = job(r, d, "dropout_max_norm")
        strengths = sorted(rows.loc[rows["status"] == "ok", "strength"].unique())
        if len(strengths) < 2:
            continue
        loose, best = strengths[-1], chosen_strength(rows, t)  # the largest c never binds: dropout alone
        if best is None:
            out.append(_diverged("max_norm_helps_dropout", d, "dropout_max_norm", "dropout_max_norm"))
            continue
        diff = paired_difference(seeds_at(rows, best, "test_metric"), seeds_at(rows, loose, "test_metric"))
        part = False if best == loose else above(diff, 0.0)
        text = (f"test metric at the best validation bound c={sig(best)} minus dropout alone (c={sig(loose)}, "
                f"never binding), same p: {effect_text(diff)}"
                + (" (the best bound is no bound)" if best == loose else ""))
        out.append(ClaimResult("max_norm_helps_dropout", d, "dropout_max_norm", verdict([part]), text,
                               {"best_c": float(best), **_iv("delta", diff)}))
    return out or _missing("max_norm_helps_dropout", "family dropout_max_norm")


_MATCHING = ("metric_tol", "match_on", "loss_tol")  # what picks a matched strength

CLAIMS = [
    Claim("texts_l2_sweep",
          "L2 from small λ to 1: small λ keeps the fit, training loss rises with λ, the strongest λ predicts "
          "the mean, and at λ = 1 the weights collapse to a spike at 0.",
          "the texts' L2 sweep (docs/science.md)",
          f"all four parts hold: Δ test R² (smallest λ − 0) above −{BASE.metric_tol}; Spearman ρ(λ, training loss) > 0 "
          f"at p < {P_TREND}; at the strongest λ, the prediction's spread over the inputs below {MEAN_FLAT} of the "
          f"true function's (without prediction tables: |test R²| below {MEAN_R2}); trained/initial kernel spread below "
          f"{SPIKE_SPREAD}.", texts_l2_sweep, ("metric_tol", "mean_flat", "mean_r2", "spike_spread", "p_trend")),
    Claim("texts_dropout_sweep",
          "Dropout over p: loss rises with p, around p ≈ 0.6 the model predicts about the mean, and at p = 1 the "
          "weights keep their initial values.",
          "the texts' dropout sweep (docs/science.md)",
          f"Spearman ρ(p, training loss) > 0 at p < {P_TREND}; at the p nearest 0.6, the prediction's spread below "
          f"{MEAN_FLAT} of the true function's (else |test R²| below {MEAN_R2}); "
          f"no kernel weight moved at p = 1.", texts_dropout_sweep, ("mean_flat", "mean_r2", "p_trend")),
    Claim("texts_sparsity_order",
          "L1 gives sparse weights, L2 spreads weight over all of them, elastic net sits in between.",
          "the texts (docs/science.md); Tibshirani 1996; Zou & Hastie 2005",
          "at matched validation metric, the fraction of (near-)zero weights: L1 − elastic net > 0 and "
          "elastic net − L2 > 0 (intervals above 0). Near zero: |w| below the zero threshold times the rms of its "
          "layer's kernel (scale-free); the proximal variant counts exact zeros.", texts_sparsity_order,
          _MATCHING + ("near_zero",)),
    Claim("l1_exact_zeros",
          "L1 gives many more exactly-zero weights than L2 at a matched validation metric.",
          "Tibshirani 1996",
          f"exact-zero fraction of L1 minus that of L2 above {BASE.fraction_margin} (interval above it); only a "
          "proximal L1 step can give exact zeros, so subgradient L1 is not testable.",
          l1_exact_zeros, _MATCHING + ("fraction_margin",)),
    Claim("normalization_scale_invariance",
          "With normalization, the validation metric barely moves with λ, while ‖W‖ falls and the effective "
          "learning rate η/‖W‖² rises.",
          "van Laarhoven 2017",
          f"within the claim's domain of moderate decay (decoupled decay: λ·η ≤ {BASE.decay_domain}; L2 in the loss: "
          "every λ of the grid): Δ validation metric (λ − 0) "
          f"within ±{BASE.metric_tol} at every λ; at the largest such λ, log ‖W‖ of the normalized layers below that at "
          "λ = 0, and log η/‖W‖² above it.", normalization_scale_invariance,
          ("metric_tol", "decay_domain")),
    Claim("adam_l2_is_not_decay",
          "Under Adam, L2 in the loss and decoupled weight decay differ at the same λ.",
          "Loshchilov & Hutter 2019",
          f"at some λ, l2 (λ) and weight_decay (2λ, the same penalty under plain SGD) differ: Δ validation metric "
          f"outside ±{BASE.metric_tol} or Δ log ‖W‖ outside ±log 1.05, interval and all.", adam_l2_is_not_decay,
          ("metric_tol", "norm_tol")),
    Claim("sgd_l2_is_decay",
          "Under plain SGD, L2 in the loss with λ and decoupled weight decay with 2λ coincide.",
          "Loshchilov & Hutter 2019 (the control)",
          f"at every λ, Δ validation metric within ±{BASE.metric_tol} and Δ log ‖W‖ within ±log 1.05.", sgd_l2_is_decay,
          ("metric_tol", "norm_tol")),
    Claim("group_lasso_removes_units",
          "Group lasso removes whole neurons at a matched validation metric; L1 and L2 do not.",
          "Scardapane et al. 2017",
          f"fraction of hidden units removed (output exactly constant over the training set, whatever the weights' "
          f"scale): group lasso minus L1, and minus L2, above {BASE.fraction_margin}; only a proximal step removes "
          "units exactly, so subgradient group lasso is not testable.", group_lasso_removes_units,
          _MATCHING + ("fraction_margin",)),
    Claim("max_norm_helps_dropout",
          "Dropout works better with a max-norm constraint on each unit's incoming weights.",
          "Srivastava et al. 2014",
          "test metric of dropout with max-norm at its best validation bound c, minus dropout alone at the same p "
          "(the family's largest c, which never binds), above 0; not reproduced when the best bound is no bound.",
          max_norm_helps_dropout, ("choose",)),
    Claim("l1_beats_l2_when_sparse",
          "When irrelevant features dominate, L1 beats L2 on test error.",
          "Ng 2004",
          "on a dataset where fewer than half of the features are relevant, test MSE of L2 minus that of L1, "
          "each at its best validation setting, above 0.", l1_beats_l2_when_sparse, ("choose",)),
    Claim("elastic_net_groups",
          "Within a block of correlated relevant features, elastic net spreads weight over the block while L1 "
          "keeps few of its features.",
          "Zou & Hastie 2005",
          "share of each block's features in use (participation ratio of their first-layer weight norms over "
          f"the block size), elastic net minus L1, above {BASE.fraction_margin} (a tenth of the block more).",
          elastic_net_groups, ("fraction_margin", "choose")),
]


def with_fragility(results: list[ClaimResult], under: dict[str, list[ClaimResult]]) -> list[ClaimResult]:
    """Mark each result whose verdict differs under some threshold variant (``under``: the
    claim's results per variant label) as fragile, with the verdicts it takes."""
    for res in results:
        others = {label: next((o.verdict for o in rows if o.key == res.key), NOT_MEASURED)
                  for label, rows in under.items()}
        res.variants = {label: v for label, v in others.items() if v != res.verdict}
        if res.variants:
            taken = sorted({res.verdict, *res.variants.values()}, key=CLAIM_VERDICTS.index)
            changes = "; ".join(f"{v} with {label}" for label, v in res.variants.items())
            res.fragile = f"{' / '.join(taken)} as the thresholds move ({changes})"
    return results


def check_claims(results: Results, variants: dict[str, Thresholds] = VARIANTS) -> list[tuple[Claim, list[ClaimResult]]]:
    """Every claim under the base thresholds, each result marked fragile where a variant
    of its thresholds gives another verdict."""
    out = []
    for claim in CLAIMS:
        checked = claim.check(results, BASE)
        under = {label: claim.check(results, t) for label, t in variants.items() if _moves(t) & set(claim.uses)}
        out.append((claim, with_fragility(checked, under)))
    return out


def _moves(t: Thresholds) -> set[str]:
    """The fields in which ``t`` differs from the base thresholds."""
    return {f.name for f in fields(Thresholds) if getattr(t, f.name) != getattr(BASE, f.name)}


def claims_json(checked: list[tuple[Claim, list[ClaimResult]]], number) -> dict:
    """``{claim: {"<dataset>:<variant>": {"verdict": ..., "fragile", "reason", numbers...}},
    "verdicts": counts, "fragile": count}``."""
    out: dict = {}
    counts = {v: 0 for v in CLAIM_VERDICTS}
    fragile = 0
    for claim, results in checked:
        out[claim.id] = {}
        for res in results:
            entry = {"verdict": res.verdict, **{k: number(v) for k, v in res.numbers.items()}}
            if res.reason:
                entry["reason"] = res.reason
            if res.fragile:
                entry["fragile"] = res.fragile
                entry["verdicts_under_variants"] = res.variants
            out[claim.id][res.key] = entry
            counts[res.verdict] += 1
            fragile += bool(res.fragile)
    out["verdicts"] = counts
    out["fragile"] = fragile
    return out
