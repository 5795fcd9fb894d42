"""The report stage: every job's result tables to `index.html` (findings, claims, figures,
summary, provenance), `findings.json` (every finding's verdict, effect, interval and raw
and adjusted p-values, each dataset's power, the aggregates across datasets),
`claims.json` (each literature claim's verdict, numbers and fragility) and
`metrics.json` (the few headline numbers DVC reads as metrics: :mod:`regstudy_report.headline`).

All files are byte-reproducible from the same inputs: no timestamps, PNGs without
metadata, floats in the JSON files rounded to 6 significant digits.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import inspect
import json
import multiprocessing
import multiprocessing.pool
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from regstudy_report import figures, headline_figures
from regstudy_report.across import aggregate_sentence, family_aggregates, rank_families
from regstudy_report.claims import METRIC_TOL, check_claims, claims_json
from regstudy_report.findings import (
    data_checks,
    dataset_power,
    findings,
    paired_by_strength,
    ranking,
    ranking_sentence,
    verdict_counts,
)
from regstudy_report.headline import headline_metrics
from regstudy_report.settings import Settings, SettingsError
from regstudy_report.stats import effect_text, estimate, estimate_text, sig
from regstudy_report.tables import (
    NoResultsError,
    Results,
    diverged_members,
    jobs,
    json_number,
    load_results,
    plot_tables,
    summary_table,
)

__all__ = ["NoResultsError", "SettingsError", "Settings", "build_report"]

PACKAGES = ("torch", "pytorch_lightning", "hydra-core", "mlflow", "seaborn", "dvc", "pandas", "numpy")
TEMPLATES = Path(__file__).parent / "templates"


def package_versions() -> dict[str, str]:
    """Installed version of each package the study depends on, or "not installed"."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _figure_plan(results: Results, dataset: str, paired: pd.DataFrame | None = None,
                 margin: float = 0.0) -> list[tuple[str, str, object, tuple]]:
    """(slug, title, figure function, arguments) of the figures a dataset has data for;
    ``paired``: the paired differences against each family's comparator by strength
    (:func:`findings.paired_by_strength`), ``margin``: the metric's equivalence margin."""
    members = results.of("members", dataset)
    curves, layers, params = (results.of(t, dataset) for t in ("curves", "layers", "params"))
    predictions = results.predictions.get(dataset)
    data = results.data.get(dataset, {})
    families = set(members["family"])
    has_predictions = predictions is not None and len(predictions) > 0
    plan = []
    if len(curves):
        plan.append(("loss-curves", "Loss curves", figures.loss_curves, (curves, members)))
    if has_predictions:
        title = "Decision boundaries" if "x0" in predictions else "Fitted curves"
        plan.append(("predictions", title, figures.fitted_functions, (predictions, members, data)))
    if len(params):
        plan.append(("parameter-kdes", "Parameter distributions", figures.parameter_kdes, (params, members)))
    if paired is not None and len(paired):
        plan.append(("paired-vs-strength", "Paired effect against strength", headline_figures.paired_vs_strength,
                     (paired, members, margin)))
    if families & set(figures.SPARSITY_FAMILIES):
        plan.append(("sparsity", "Sparsity and alive units", figures.sparsity_vs_strength, (members,)))
    features = results.of("features", dataset)
    if len(features) and families & set(figures.FEATURE_FAMILIES):
        plan.append(("features", "Input features kept", figures.feature_weights, (features, members)))
    if len(layers) and any(families & set(pair) for pair in figures.NORMALIZATION_PAIRS):
        plan.append(("normalization", "Weight norm and effective learning rate", figures.norm_and_effective_lr,
                     (layers, members)))
    if has_predictions and (predictions["family"] == "dropout").any():
        plan.append(("mc-dropout", "Monte Carlo dropout", figures.mc_dropout, (predictions, members, data)))
    return plan


_PLANS: dict[str, list] = {}  # what forked figure workers read (inherited, not pickled)
# Rough drawing cost of each figure, so that the costliest start first and neither
# worker is left alone with one at the end.
_COST = {"predictions": 3.0, "parameter-kdes": 3.0, "loss-curves": 2.0, "paired-vs-strength": 1.5}


def _render_one(task: tuple[str, int]) -> dict:
    dataset, index = task
    return _render(dataset, *_PLANS[dataset][index])


@contextlib.contextmanager
def figures_drawn(results: Results, paired: dict[str, pd.DataFrame] | None = None,
                  margins: dict[str, float] | None = None) -> Iterator[Callable[[], dict[str, list[dict]]]]:
    """Draw every dataset's figures in the background while the caller goes on; yields the
    function that waits for them and returns them per dataset, in report order.

    One figure per task, over two forked processes: matplotlib is single-threaded and the
    figures are independent, so the second core halves their time, and the caller's own
    work (findings, claims, tables) runs meanwhile; the output is the same bytes as drawing
    them in order, in this process, as is done for a single dataset or without fork.
    """
    global _PLANS
    paired, margins = paired or {}, margins or {}
    plans = {d: _figure_plan(results, d, paired.get(d), margins.get(d, 0.0)) for d in results.datasets}
    if len(results.datasets) < 2 or not hasattr(os, "fork"):
        yield lambda: {d: [_render(d, *step) for step in plans[d]] for d in results.datasets}
        return
    _PLANS = plans
    tasks = [(d, i) for d in results.datasets for i in range(len(_PLANS[d]))]
    by_cost = sorted(tasks, key=lambda t: -_COST.get(_PLANS[t[0]][t[1]][0], 0.5))
    try:
        with _forked_pool(2) as pool:
            _PLANS = {}  # the workers have their copy
            drawing = pool.map_async(_render_one, by_cost, chunksize=1)

            def wait() -> dict[str, list[dict]]:
                rendered = dict(zip(by_cost, drawing.get()))
                return {d: [rendered[t] for t in tasks if t[0] == d] for d in results.datasets}

            yield wait
    finally:
        _PLANS = {}


def _render(dataset: str, slug: str, title: str, plot, args: tuple) -> dict:
    """A figure as {id, title, caption, src}; the caption is the figure's docstring."""
    with _collected_once():
        src = figures.to_data_uri(plot(*args))
    return {"id": f"{dataset}-{slug}", "title": title, "caption": inspect.getdoc(plot), "src": src}


@contextlib.contextmanager
def _collected_once() -> Iterator[None]:
    """Run the block without the cyclic garbage collector, then collect once: a figure's
    artists, which refer to each other, set off a collection every few hundred objects
    created, a tenth of the drawing time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.collect()


def _forked_pool(processes: int) -> multiprocessing.pool.Pool:
    """A pool of forked workers whose garbage collections skip every object they inherit
    (frozen while forking): cheaper, and those objects' memory stays shared."""
    gc.freeze()
    try:
        return multiprocessing.get_context("fork").Pool(processes, initializer=_default_signals)
    finally:
        gc.unfreeze()


def _default_signals() -> None:
    """A worker dies of SIGTERM (the pool's end), whatever handler the forked process had:
    one that only takes note (Lightning's, in a process that trained) left a worker
    waiting on the pool's queue forever, and the report with it."""
    for name in ("SIGTERM", "SIGINT", "SIGHUP"):  # those this system has (Windows: no SIGHUP)
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)


def _mlflow_filters(results: Results) -> list[dict]:
    """Each job's MLflow search filter, in report order: its runs carry its results' digest
    (a hash of its members.csv), so the filter finds the very runs behind these tables. Run
    ids, the tracking URI and the git commit differ from one clone (and one run) to the
    next; the report, a hashed DVC output, holds none of them (each job's ``run.json``
    has them, outside DVC's hash)."""
    return [{"dataset": d, "family": f,
             "filter": (f"tags.results_digest = '{results.digests[(d, f)]}'" if (d, f) in results.digests else
                        f"tags.dataset = '{d}' and tags.family = '{f}'")}
            for d, f, _ in jobs(results.members)]


@dataclass
class Analysis:
    """Everything the report states, computed once from the results."""

    settings: Settings
    found: list
    power: list
    aggregates: list
    ranks: object  # across.Ranks, or None with too few families or datasets
    checked: list
    summary: pd.DataFrame


def _headline(figure, *args) -> dict:
    """A headline figure, drawn in this process, as {caption, src}."""
    with _collected_once():
        src = figures.to_data_uri(figure(*args))
    return {"caption": inspect.getdoc(figure), "src": src}


def render_html(results: Results, analysis: Analysis, figures_by_dataset: dict[str, list[dict]]) -> str:
    """The whole report page: the findings (headline figures first), the checked claims,
    the summary table and each dataset's figures."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["num"] = sig
    env.filters["estimate"] = estimate
    env.filters["estimate_of"] = estimate_text
    env.filters["effect"] = effect_text
    found, settings = analysis.found, analysis.settings
    checks = {c.dataset: c for c in data_checks(results.members, results.curves)}
    power = {p.dataset: p for p in analysis.power}
    ranks = analysis.ranks
    return env.get_template("index.html.j2").render(
        settings=settings,
        heatmap=_headline(headline_figures.effects_heatmap, found),
        claim_grid=_headline(headline_figures.claim_grid, analysis.checked),
        aggregates=analysis.aggregates,
        aggregate_text=aggregate_sentence(analysis.aggregates),
        ranks=ranks,
        cd_diagram=_headline(headline_figures.critical_difference, ranks, settings.alpha) if ranks else None,
        counts=verdict_counts(found),
        promised=sum(1 for f in found if f.family != "none" and not f.borderline),
        tested_rows=sum(1 for f in found if f.family != "none"),
        datasets=[
            {"name": d, "families": results.families(d), "figures": figures_by_dataset[d],
             "ranking": ranking(found, d), "ranking_text": ranking_sentence(found, d), "power": power.get(d),
             "forest": _headline(headline_figures.forest_plot, [f for f in found if f.dataset == d]),
             "check": checks.get(d), "findings": [f for f in found if f.dataset == d]}
            for d in results.datasets
        ],
        claims=analysis.checked,
        claims_tolerance=METRIC_TOL,
        summary=analysis.summary.to_dict("records"),
        diverged=diverged_members(results.members).to_dict("records"),
        runs=_mlflow_filters(results),
        versions=package_versions(),
    )


def findings_json(analysis: Analysis, number: Callable = json_number) -> dict:
    """Every finding's numbers and verdict, each dataset's power, the aggregates across
    datasets and the settings behind them (``reports/findings.json``)."""
    s = analysis.settings
    out: dict = {
        "settings": {"alpha": s.alpha, "power": s.power, "equivalence": s.equivalence,
                     "error_control": "Holm across the tested findings of each dataset",
                     "interval": "95% Student-t interval of the mean paired difference (per comparison)"},
        "datasets": {p.dataset: {"metric": p.metric_name, "margin": number(p.margin), "seeds": p.seeds,
                                 "tests": p.tests, "paired_sd": number(p.sd), "detectable_effect": number(p.detectable)}
                     for p in analysis.power},
        "findings": {},
        "verdicts": verdict_counts(analysis.found),
    }
    for f in analysis.found:
        if f.family == "none":
            continue
        entry = {
            "verdict": f.verdict, "strength_name": f.strength_name, "strength": number(f.strength),
            "comparator": f.comparator.label, "comparator_reason": f.comparator.reason, "metric": f.metric_name,
            "margin": number(f.margin), "seeds": f.effect.n, "test": number(f.test.mean),
            "comparator_test": number(f.baseline.mean), "effect": number(f.effect.mean),
            "effect_lo": number(f.effect.lo), "effect_hi": number(f.effect.hi), "p": number(f.p_value),
            "p_adjusted": number(f.p_adjusted), "p_equivalence": number(f.p_equivalence),
            "p_equivalence_adjusted": number(f.p_equivalence_adjusted), "borderline": f.borderline,
            "effect_se": number(f.measured.se if f.measured is not None else None),
            "seeds_choosing_strength": int(np.isclose(f.chosen, f.strength).sum())
            if f.chosen is not None and f.strength is not None else 0,
            "near_tied": [number(v) for v in f.near_tied], "note": f.note,
        }
        if f.seeds_to_decide is not None:
            entry.update(seeds_to_decide=f.seeds_to_decide, decided_as=f.decided_as)
        out["findings"].setdefault(f.dataset, {})[f.family] = entry
    across: dict = {"families": {a.family: {
        "datasets": a.datasets, "improvement_probability": number(a.improvement.mean),
        "improvement_probability_lo": number(a.improvement.lo), "improvement_probability_hi": number(a.improvement.hi),
        "effect_iqm": number(a.effect_iqm.mean), "effect_iqm_lo": number(a.effect_iqm.lo),
        "effect_iqm_hi": number(a.effect_iqm.hi)} for a in analysis.aggregates}}
    if analysis.ranks is not None:
        across.update(friedman_p=number(analysis.ranks.friedman_p),
                      mean_ranks={k: number(v) for k, v in analysis.ranks.mean_ranks.items()},
                      separable_pairs=[list(pair) for pair in analysis.ranks.separable])
    out["across_datasets"] = across
    return out


def _write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as tmp:
            tmp.write(text)
        os.chmod(name, 0o644)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def build_report(results_dir: str | Path, data_dir: str | Path, out_dir: str | Path,
                 settings: Settings = Settings()) -> tuple[Path, Path]:
    """Read all results, write `out_dir/index.html`, `findings.json`, `claims.json` and
    `metrics.json` (and DVC's plot tables); return the paths of the page and the metrics.

    Raises NoResultsError when `results_dir` holds no members.csv.
    """
    results = load_results(results_dir, data_dir)
    dump = lambda obj: json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"  # noqa: E731
    found = findings(results, settings)
    paired = paired_by_strength(results, found, ("val_metric", "test_metric", "gap"))
    margins = {d: settings.margin(str(results.of("members", d)["metric_name"].iloc[0])) for d in results.datasets}
    # one BLAS thread: the figures' thousands of tiny solves (one per KDE evaluation) ran
    # ten times slower with OpenBLAS waking a thread per core, each core busy with a figure
    with threadpool_limits(limits=1, user_api="blas"), \
            figures_drawn(results, {d: paired[paired["dataset"] == d] for d in results.datasets}, margins) as drawn:
        analysis = Analysis(settings=settings, found=found, power=dataset_power(found, settings),
                            aggregates=family_aggregates(found), ranks=rank_families(found, settings.alpha),
                            checked=check_claims(results), summary=summary_table(results.members))
        claims = claims_json(analysis.checked, json_number)
        metrics = dump(headline_metrics(found, [p.dataset for p in analysis.power], claims, len(results.members),
                                        json_number))
        plots = plot_tables(results.members, results.curves)
        html = render_html(results, analysis, drawn())
    out_dir = Path(out_dir)
    _write_atomic(out_dir / "index.html", html)
    _write_atomic(out_dir / "findings.json", dump(findings_json(analysis)))
    _write_atomic(out_dir / "metrics.json", metrics)
    _write_atomic(out_dir / "claims.json", dump(claims))
    for name, table in plots.items():
        _write_atomic(out_dir / "plots" / name, table.to_csv(index=False, float_format="%.6g"))
    return out_dir / "index.html", out_dir / "metrics.json"
