"""The whole pipeline on a tiny study, through real `dvc repro` in a temporary git repo."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import copy_project, run, tiny_dvc_yaml

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ["signal", "moons"]  # built-in: study.datasets
CSV = "mine"  # a CSV file of our own, with string classes: its own stages csv@mine, train_csv@mine
ALL = [*DATASETS, CSV]
FAMILIES = ["l2", "dropout", "label_smoothing"]  # label smoothing: classification only
STRENGTHS = {"l2": [0.0, 0.01], "dropout": [0.0, 1.0], "label_smoothing": [0.0, 0.2],
             "weight_decay_sgd": [0.0, 0.02]}
CONTROLS = {"datasets": ["signal"], "families": ["weight_decay_sgd"], "overrides": ["optim.lr=0.1"]}
SEEDS = [0, 1]
# datasets with seeds of their own (study.by_dataset.<name>.seeds, csv.<name>.seeds): signal,
# with the control on it, and the CSV file; moons keeps study.seeds
OWN_SEEDS = {"signal": [0, 1, 2], "mine": [3, 5]}


def seeds_of(dataset: str) -> list[int]:
    return OWN_SEEDS.get(dataset, SEEDS)


def jobs() -> list[tuple[str, str]]:
    """(dataset, family) of every job of the tiny study (label smoothing: classification only)."""
    main = [(d, f) for f in FAMILIES for d in ALL if not (f == "label_smoothing" and d == "signal")]
    return main + [(d, f) for f in CONTROLS["families"] for d in CONTROLS["datasets"]]


def job_dir(study: Path, dataset: str, family: str) -> Path:
    """results/<family>/<dataset>, or results/csv/<name>/<family> for the CSV file's stage."""
    return study / "results" / "csv" / dataset / family if dataset == CSV else study / "results" / family / dataset


def write_csv(path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(kind=np.where(x[:, 0] + x[:, 1] > 0, "yes", "no"))
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def tiny_params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] = {"seed": 0, **{d: params["data"][d] for d in ("signal", "moons")}}
    params["data"]["signal"].update(n_train=40, n_val=20, n_test=20)
    params["data"]["moons"].update(n_train=40, n_val=20, n_test=20)
    params["csv"] = {CSV: {"path": "data/raw/mine.csv", "target": "kind", "epochs": 3, "seeds": OWN_SEEDS[CSV]}}
    params["study"].update(datasets=DATASETS, families=FAMILIES, seeds=SEEDS,
                           by_dataset={d: {"epochs": 3, "overrides": [], **({"seeds": OWN_SEEDS[d]} if d in OWN_SEEDS else {})}
                                       for d in DATASETS}, controls=CONTROLS, strengths=STRENGTHS,
                           overrides=["model.hidden=[8,8]", "metrics.grid_size=20",
                                      "metrics.grid_size_2d=8"])
    return params


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("study")
    copy_project(repo)
    (repo / "reports").mkdir()
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    write_csv(repo / "data" / "raw" / "mine.csv")
    # the tiny study generates two built-in datasets
    (repo / "dvc.yaml").write_text(tiny_dvc_yaml((repo / "dvc.yaml").read_text(),
                                                 ("sparse", "digits", "diabetes", "breast_cancer")))
    run(["git", "init", "-q"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty",
         "-m", "empty"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")  # the plots' templates
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "study"], repo)
    run([sys.executable, "-m", "dvc", "repro"], repo)
    return repo


def test_dvc_reads_its_yaml_files_with_libyaml():
    """DVC's safe loads (dvc.yaml, dvc.lock) go through ruamel's C parser, which the
    environment installs (ruamel.yaml.clib): the pure-Python one cost 0.3 s of a no-op repro."""
    from dvc.utils.serialize._yaml import parse_yaml
    from ruamel.yaml import YAML
    from ruamel.yaml.main import CParser

    assert CParser is not None and YAML(typ="safe").Parser is CParser
    text = (ROOT / "dvc.yaml").read_text()
    assert parse_yaml(text, "dvc.yaml") == yaml.safe_load(text)


def test_outputs_exist_with_their_content(study):
    assert sorted(p.parent for p in (study / "results").rglob("members.csv")) \
        == sorted(job_dir(study, d, f) for d, f in jobs())  # label smoothing skipped signal
    for ds, fam in jobs():
        out = job_dir(study, ds, fam)
        members = pd.read_csv(out / "members.csv")
        assert set(members.dataset) == {ds} and set(members.family) == {fam}
        grid = [(s, seed) for s in STRENGTHS[fam] for seed in seeds_of(ds)]
        assert list(zip(members.strength, members.seed)) == grid
        assert (members.epochs_trained == 3).all()
        curves = pd.read_csv(out / "curves.csv")
        assert len(curves) == 3 * len(grid)
        assert (out / "params.parquet").is_file()
        assert (out / "predictions.parquet").is_file() == (ds != CSV)  # only 1-D and 2-D inputs
    mine = pd.read_csv(job_dir(study, CSV, "l2") / "members.csv")
    assert set(mine.task) == {"classification"}  # inferred from the CSV's string target
    control = pd.read_csv(study / "results" / "weight_decay_sgd" / "signal" / "members.csv")
    assert list(control.strength) == [0.0, 0.0, 0.0, 0.02, 0.02, 0.02]  # signal's own 3 seeds
    assert set(control.optimizer) == {"SGD"} and set(control.lr) == {0.1}  # the controls' overrides came last
    html = (study / "reports" / "index.html").read_text()
    assert "data:image/png;base64," in html
    metrics = json.loads((study / "reports" / "metrics.json").read_text())
    assert set(metrics) == {*ALL, "study"}
    findings = json.loads((study / "reports" / "findings.json").read_text())
    assert findings["datasets"]["signal"]["seeds"] == len(seeds_of("signal"))
    assert findings["datasets"]["mine"]["seeds"] == len(seeds_of("mine"))
    assert set(findings["findings"]["signal"]) == {"l2", "dropout", "weight_decay_sgd"}
    assert set(findings["findings"]["mine"]) == {"l2", "dropout", "label_smoothing"}
    # the SGD control is judged against its own λ = 0: its optimizer is not the baseline's
    assert findings["findings"]["signal"]["weight_decay_sgd"]["comparator"] == "weight_decay_sgd at lam = 0"
    assert metrics["study"]["members"] == sum(len(pd.read_csv(job_dir(study, d, f) / "members.csv"))
                                              for d, f in jobs())


def test_a_dataset_with_seeds_of_its_own_draws_and_trains_exactly_those(study):
    """study.by_dataset.<name>.seeds (csv.mine.seeds): the data file (generate, csv@mine) holds a draw per
    seed of the dataset's own, and every job on it (the families and the control) trains
    those seeds; moons keeps study.seeds. members.csv also has the near-zero fraction at a
    tenth and ten times the threshold, around the threshold's own."""
    import numpy as np

    for ds in ALL:
        with np.load(study / "data" / f"{ds}.npz") as f:
            assert f["seeds"].tolist() == seeds_of(ds), ds
    for ds, fam in jobs():
        members = pd.read_csv(job_dir(study, ds, fam) / "members.csv")
        assert sorted(set(members.seed)) == seeds_of(ds), (ds, fam)
        strict, near, loose = members.near_zero_fraction_strict, members.near_zero_fraction, \
            members.near_zero_fraction_loose
        assert ((strict <= near) & (near <= loose)).all() and (loose > strict).any(), (ds, fam)
    assert set(pd.read_csv(study / "results" / "l2" / "moons" / "members.csv").zero_threshold) == {1e-2}


def test_editing_a_datasets_seeds_draws_its_data_again(study):
    """study.by_dataset is a param of the generate stage: new seeds for moons re-run
    generate (and so every family on the built-in datasets), not the CSV file's stages."""
    path = study / "params.yaml"
    text = path.read_text()
    params = yaml.safe_load(text)
    params["study"]["by_dataset"]["moons"]["seeds"] = [0, 1, 4]
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        changed = set(json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], study).stdout))
    finally:
        path.write_text(text)
    assert {"generate", *(f"train@{f}" for f in FAMILIES)} <= changed
    assert not changed & {"csv@mine", "train_csv@mine"}


def test_a_bad_value_stops_dvc_repro_before_anything_runs_or_is_deleted(study):
    """Issue 32, defect 4: a typo in one dataset's epochs used to be found by the train
    stages one job at a time, after DVC had deleted the family's results and the other
    datasets had trained. The check stage runs first: dvc repro stops there, naming the
    params.yaml key; nothing trains, nothing is deleted; fixed, the study is up to date."""
    path = study / "params.yaml"
    text = path.read_text()
    params = yaml.safe_load(text)
    params["study"]["by_dataset"]["moons"]["epochs"] = "eighty"
    params["study"]["strengths"]["l2"] = [0.0, 0.02]  # and a change that would re-run train@l2
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    before = {p: p.stat().st_mtime_ns for p in (study / "results").rglob("*") if p.is_file()}
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    try:
        done = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=study, env=env, capture_output=True,
                               text=True, timeout=300)
    finally:
        path.write_text(text)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "study.by_dataset.moons.epochs='eighty' in params.yaml; allowed: an integer >= 1" in output
    assert "Running stage 'train@" not in output
    assert {p: p.stat().st_mtime_ns for p in (study / "results").rglob("*") if p.is_file()} == before
    again = run([sys.executable, "-m", "dvc", "repro"], study)  # the check's file back, nothing else to do
    assert "Stage 'check'" in again.stdout and "Running stage" not in again.stdout
    assert json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], study).stdout) == {}


@pytest.mark.slow  # 40 s: a job trained by hand, the report twice, train@l2 again
def test_a_family_that_diverged_entirely_is_reported_and_the_next_repro_recovers(study):
    """Issue 32, defect 1, as the issue reproduces it: l2 on moons trained with SGD at a
    learning rate of 1e3, so that every member diverges, in place of results/l2/moons; the
    report stage renders, saying so; the next `dvc repro` trains l2 again."""
    job = study / "results" / "l2" / "moons"
    shutil.rmtree(job)
    run([sys.executable, "-m", "regstudy.train", "experiment=l2", "data=moons", "data.path=data/moons.npz",
         "optim=sgd", "optim.lr=1e3", f"members.strengths={STRENGTHS['l2']}", f"members.seeds={SEEDS}",
         "trainer.max_epochs=3", "model.hidden=[8,8]", "logger=none", f"paths.results={job}"], study)
    assert (pd.read_csv(job / "members.csv")["status"] == "diverged").all()
    done = run([sys.executable, "-m", "dvc", "repro", "-s", "report"], study)
    html = (study / "reports" / "index.html").read_text()
    assert "l2: no setting trained on every seed without diverging; nothing to compare." in html
    assert json.loads((study / "reports" / "findings.json").read_text())["findings"]["moons"]["l2"]["verdict"] == \
        "not measured"
    assert "wrote" in done.stderr + done.stdout
    run([sys.executable, "-m", "dvc", "repro"], study)  # train@l2 back (from DVC's run cache), the report again
    assert (pd.read_csv(job / "members.csv")["status"] == "ok").all()
    assert "every seed without diverging" not in (study / "reports" / "index.html").read_text()


def test_dvc_metrics_are_the_headline_and_claims_an_output(study):
    """`dvc metrics show` reads reports/metrics.json only, at most 40 values (the headline:
    regstudy_report.headline); claims.json is an output of the report stage, its counts
    those of its rows."""
    from regstudy_report.headline import MAX_VALUES, count_values, flat_keys

    proc = run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], study)
    files = next(iter(json.loads(proc.stdout).values()))["data"]
    assert set(files) == {"reports/metrics.json"}
    written = json.loads((study / "reports" / "metrics.json").read_text())
    assert count_values(written) == 4 * len(ALL) + 13 <= MAX_VALUES
    # DVC lists every value but the nulls (a dataset without a tested family has no best effect)
    shown = flat_keys(files["reports/metrics.json"]["data"])
    assert shown == {k: v for k, v in flat_keys(written).items() if v is not None}
    outs = yaml.safe_load((study / "dvc.yaml").read_text())["stages"]["report"]["outs"]
    assert {"reports/claims.json": {"cache": False}} in outs
    claims = json.loads((study / "reports" / "claims.json").read_text())
    counts = claims["verdicts"]
    assert sum(counts.values()) == sum(len(v) for k, v in claims.items() if k not in ("verdicts", "fragile"))
    assert claims["fragile"] == sum("fragile" in e for k, v in claims.items() if k not in ("verdicts", "fragile")
                                    for e in v.values())


def test_dvc_plots_show_a_line_per_family_of_each_dataset(study):
    """The plots declared in dvc.yaml: per dataset, loss curves and metric against
    strength, coloured by family; the values are the seed means of members.csv."""
    proc = run([sys.executable, "-m", "dvc", "plots", "show", "--json"], study)
    shown = json.loads(proc.stdout)["data"]
    assert set(shown) == {f"reports/plots/{kind}/{d}.csv" for kind in ("loss_curves", "metric_vs_strength")
                          for d in ALL}
    spec = shown["reports/plots/metric_vs_strength/signal.csv"][0]["content"]
    assert spec["encoding"]["color"]["field"] == "family"
    values = spec["data"]["values"]
    assert {v["family"] for v in values} == {"l2", "dropout", "weight_decay_sgd"}
    members = pd.read_csv(study / "results" / "l2" / "signal" / "members.csv")
    for strength, rows in members.groupby("strength"):
        plotted = next(float(v["val_metric"]) for v in values if v["family"] == "l2" and float(v["strength"]) == strength)
        assert plotted == pytest.approx(rows.val_metric.mean(), rel=1e-5)
    curves = shown["reports/plots/loss_curves/moons.csv"][0]["content"]["data"]["values"]
    assert sorted(int(v["epoch"]) for v in curves if v["family"] == "l2") == [1, 2, 3]


def test_second_repro_does_nothing(study):
    proc = run([sys.executable, "-m", "dvc", "repro"], study)
    assert "Running stage" not in proc.stdout
    assert "up to date" in proc.stdout


def test_python_bytecode_is_not_a_dependency(study):
    """The code's bytecode caches (written wherever Python runs without
    PYTHONDONTWRITEBYTECODE, with the clone's file times) leave every stage up to date."""
    caches = [study / "src" / "regstudy" / "data" / "__pycache__", study / "src" / "regstudy_report" / "__pycache__"]
    for cache in caches:
        cache.mkdir(exist_ok=True)
        (cache / "stale.cpython-311.pyc").write_bytes(b"not the source")
    try:
        proc = run([sys.executable, "-m", "dvc", "status", "--json"], study)
        assert json.loads(proc.stdout) == {}
    finally:
        for cache in caches:
            (cache / "stale.cpython-311.pyc").unlink()


def finished_runs(client: MlflowClient, experiment_id: str, timeout: float = 60.0) -> list:
    """The experiment's runs once none is RUNNING: a DVC train stage returns before its
    tracking process has ended its runs (they end while the next stage trains)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = client.search_runs([experiment_id], max_results=1000)
        if all(r.info.status != "RUNNING" for r in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)


def test_mlflow_store_holds_every_member(study):
    client = MlflowClient(f"sqlite:///{study / 'mlflow.db'}")
    exp = client.get_experiment_by_name("regstudy")
    runs = finished_runs(client, exp.experiment_id)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted((r.data.tags["dataset"], r.data.tags["family"]) for r in parents) == sorted(jobs())
    assert len(children) == sum(len(STRENGTHS[f]) * len(seeds_of(d)) for d, f in jobs())
    assert all(r.info.status == "FINISHED" for r in runs)
    for r in children:
        fam, ds = r.data.tags["family"], r.data.tags["dataset"]
        assert float(r.data.params["member.strength"]) in STRENGTHS[fam]
        assert int(r.data.params["member.seed"]) in seeds_of(ds)
        assert r.data.params["data.name"] == ds
        assert r.data.params["trainer.max_epochs"] == "3"
        assert r.data.tags["git_commit"] != "unknown"
        # MLflow's own Source and commit: the stage's module, as `python -m` runs it cold
        assert r.data.tags["mlflow.source.name"].endswith("src/regstudy/stages/train.py")  # the installed copy
        assert r.data.tags["mlflow.source.git.commit"] == r.data.tags["git_commit"].removesuffix("-dirty")
        history = client.get_metric_history(r.info.run_id, "val_loss")
        assert [m.step for m in history] == [1, 2, 3]
    # The results point at these runs.
    run_json = json.loads((study / "results" / "l2" / "moons" / "run.json").read_text())
    ids = {r.info.run_id for r in children}
    assert set(run_json["member_run_ids"]) <= ids


def test_editing_one_family_reruns_only_its_stages(study):
    params = yaml.safe_load((study / "params.yaml").read_text())
    params["study"]["strengths"]["l2"] = [0.0, 0.1]
    (study / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run([sys.executable, "-m", "dvc", "status", "--json"], study)
    changed = set(json.loads(proc.stdout))
    # and the check of the whole study, which writes the same file again, and the CSV file's
    # stage, which trains every family on it: nothing else re-runs
    assert changed == {"check", "train@l2", "train_csv@mine"}


def test_editing_the_csv_file_regenerates_it_and_reruns_the_families(study):
    params = yaml.safe_load((study / "params.yaml").read_text())
    params["study"]["strengths"]["l2"] = STRENGTHS["l2"]  # undo the previous test's edit
    (study / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    path = study / "data" / "raw" / "mine.csv"
    path.write_text(path.read_text() + "0.1,0.2,0.3,yes\n")
    done = run([sys.executable, "-m", "dvc", "repro"], study).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", done))
    # the CSV's own stages and the report (it reads the data folder); no family on the built-in sets
    assert ran == {"csv@mine", "train_csv@mine", "report"}


def test_push_then_pull_in_a_second_clone_needs_no_repro(study, tmp_path):
    """The DVC remote round trip: `dvc push` from the study, `git clone` + `dvc pull` in a
    second clone; there `dvc repro` runs nothing and the report is the same bytes."""
    dvc = [sys.executable, "-m", "dvc"]
    run([*dvc, "repro"], study)  # up to date after the edits of the tests before
    run([*dvc, "remote", "add", "-f", "-d", "storage", str(tmp_path / "storage")], study)
    run(["git", "add", "-A"], study)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "lock and remote"], study)
    run([*dvc, "push"], study)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(study), str(clone)], tmp_path)
    run([*dvc, "pull"], clone)
    proc = run([*dvc, "repro"], clone)
    assert "Running stage" not in proc.stdout and "up to date" in proc.stdout
    assert (clone / "reports" / "index.html").read_bytes() == (study / "reports" / "index.html").read_bytes()
    for path in (study / "results").rglob("*.csv"):
        assert (clone / path.relative_to(study)).read_bytes() == path.read_bytes()
    status = run(["git", "status", "--porcelain"], clone).stdout
    assert "dvc.lock" not in status  # nothing rewritten


def test_one_setting_sends_the_study_to_a_shared_server(study, tracking_server):
    """MLFLOW_TRACKING_URI in the environment of `dvc repro`: the stages log to the
    server, with the same results (so DVC finds nothing changed)."""
    os.environ["MLFLOW_TRACKING_URI"] = tracking_server.url
    start = int(time.time() * 1000)  # the server is shared by the session's tests: runs from now on
    try:
        run([sys.executable, "-m", "dvc", "repro", "-f", "-s", "train@l2"], study)
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_server.url)
    runs = [r for r in finished_runs(client, client.get_experiment_by_name("regstudy").experiment_id)
            if r.info.start_time >= start]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.data.tags["dataset"] for r in parents) == sorted(DATASETS)
    assert {r.data.tags["family"] for r in parents} == {"l2"}
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in {p.info.run_id for p in parents}]
    assert len(children) == sum(len(STRENGTHS["l2"]) * len(seeds_of(d)) for d in DATASETS)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert json.loads((study / "results" / "l2" / "moons" / "run.json").read_text())["tracking_uri"] \
        == tracking_server.url
    assert "Running stage" not in run([sys.executable, "-m", "dvc", "repro"], study).stdout


def test_results_restored_from_dvcs_cache_find_their_runs_again(study):
    """Issue 32, defect 7: DVC keeps no run.json in its cache, so a family it restores has
    lost the link to its MLflow runs. Every run carries its results' digest (a hash of
    members.csv): `python -m regstudy.runs <folder> --write` finds the runs and puts the
    link back, and the report's filter of the job names the same digest."""
    job = study / "results" / "dropout" / "moons"
    before = json.loads((job / "run.json").read_text())
    shutil.rmtree(study / "results" / "dropout")
    run([sys.executable, "-m", "dvc", "checkout", "results/dropout"], study)  # from DVC's cache
    assert (job / "members.csv").is_file() and not (job / "run.json").exists()
    found = json.loads(run([sys.executable, "-m", "regstudy.runs", str(job), "--write"], study).stdout)
    assert (found["parent_run_id"], found["member_run_ids"]) == (before["parent_run_id"], before["member_run_ids"])
    assert found["results_digest"] == before["results_digest"]
    assert json.loads((job / "run.json").read_text())["member_run_ids"] == before["member_run_ids"]
    client = MlflowClient(f"sqlite:///{study / 'mlflow.db'}")
    tags = [client.get_run(i).data.tags for i in [found["parent_run_id"], *found["member_run_ids"]]]
    assert {t["results_digest"] for t in tags} == {found["results_digest"]}
    assert f"tags.results_digest = &#39;{found['results_digest']}&#39;" in (study / "reports" / "index.html").read_text()
    assert json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], study).stdout) == {}
