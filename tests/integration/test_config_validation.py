"""Bad configs fail early and clearly: at compose time (unknown keys, options and types)
or in ``regstudy.config.validate`` (ranges and cross-field rules), and through the DVC
train stage before any result, data read or MLflow store exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from regstudy.config import ConfigError, validate
from regstudy.data import make_dataset, save_npz
from regstudy.stages.train import compose_job

COMPOSE_ERRORS = (HydraException, OmegaConfBaseException)
CONF = Path(__file__).resolve().parents[2] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_experiment_is_valid(experiment):
    """The baseline: what the study ships passes validation (so the failures below are specific);
    label smoothing on a classification dataset, where it applies."""
    data = ["data=moons"] if experiment == "label_smoothing" else []
    validate(compose_job([f"experiment={experiment}", *data]))


def test_label_smoothing_on_regression_is_refused_naming_the_dataset():
    with pytest.raises(ConfigError, match=r"label_smoothing only for classification \(data.name=signal is regression\)"):
        validate(compose_job(["experiment=label_smoothing", "data=signal"]))


@pytest.mark.parametrize("overrides", [
    ["regularizer=[dropout]", "regularizer.dropout.p=1.0"],  # p = 1 is a legal edge of a sweep
    ["regularizer=[dropout]", "regularizer.dropout.p=0.0"],
    ["experiment=dropout", "members.strengths=[0.0,0.5,1.0]"],
    ["regularizer=[elastic_net]", "regularizer.elastic_net.rho=0.0"],
    ["regularizer=[elastic_net]", "regularizer.elastic_net.rho=1.0"],
    ["experiment=l2", "members.strengths=[0.0]", "regularizer.l2.lam=0.0"],
    ["metrics.alive_threshold=0.0", "model.init.perturb_ulps=0"],  # the defaults: off
    ["metrics.alive_threshold=0.5", "model.init.perturb_ulps=4"],
])
def test_edges_are_accepted(overrides):
    validate(compose_job(overrides))


# (overrides, key, value as it must appear, a piece of the rule)
BAD = [
    (["experiment=l2", "members.strengths=[-1.0]"], "members.strengths[0]", "-1.0", ">= 0"),
    (["experiment=l2", "members.strengths=[0.0,0.1,-0.5]"], "members.strengths[2]", "-0.5", ">= 0"),
    (["regularizer=[l2]", "regularizer.l2.lam=-0.1"], "regularizer.l2.lam", "-0.1", ">= 0"),
    (["regularizer=[dropout]", "regularizer.dropout.p=1.5"], "regularizer.dropout.p", "1.5", "[0, 1]"),
    (["regularizer=[dropout]", "regularizer.dropout.p=-0.1"], "regularizer.dropout.p", "-0.1", "[0, 1]"),
    (["experiment=dropout", "members.strengths=[0.0,1.5]"], "members.strengths[1]", "1.5", "[0, 1]"),
    (["regularizer=[elastic_net]", "regularizer.elastic_net.rho=1.5"], "regularizer.elastic_net.rho",
     "1.5", "[0, 1]"),
    (["regularizer=[elastic_net]", "regularizer.elastic_net.rho=-0.1"], "regularizer.elastic_net.rho",
     "-0.1", "[0, 1]"),
    (["members.strengths=[]"], "members.strengths", "[]", "non-empty"),
    (["experiment=l2", "members.strengths=[]"], "members.strengths", "[]", "non-empty"),
    (["members.seeds=[]"], "members.seeds", "[]", "non-empty"),
    (["regularizer=[l2]", "members.sweep=l1", "members.strengths=[0.1]"], "members.sweep", "l1",
     "['l2']"),
    (["regularizer=[l2]", "members.sweep=nothing", "members.strengths=[0.1]"], "members.sweep",
     "nothing", "selected regularizers"),
    (["model.activation=swish"], "model.activation", "swish", "leaky_relu"),
    (["model.norm=group"], "model.norm", "group", "none, batch or layer"),
    (["optim.lr=abc"], "optim.lr", "abc", "> 0"),
    (["logger.epoch_metrics=[val_loss,test_loss]"], "logger.epoch_metrics[1]", "test_loss",
     "exact_zero_fraction"),
    (["logger.layer_metrics=[bias_norm]"], "logger.layer_metrics[0]", "bias_norm", "effective_lr"),
    (["logger.flush_every=0"], "logger.flush_every", "0", "or null"),
    (["metrics.zero_threshold=0"], "metrics.zero_threshold", "0", "> 0"),
    (["metrics.alive_threshold=1.0"], "metrics.alive_threshold", "1.0", "[0, 1)"),
    (["metrics.alive_threshold=-0.1"], "metrics.alive_threshold", "-0.1", "[0, 1)"),
    (["model.init.perturb_ulps=-1"], "model.init.perturb_ulps", "-1", "an integer >= 0"),
    (["compute=fast"], "compute", "fast", "auto (exact where its C kernels run, else torch)"),
    (["trainer.accelerator=tpu"], "trainer.accelerator", "tpu", "('auto', 'cpu', 'gpu')"),
    (["trainer.devices=2"], "trainer.devices", "2", "one device"),
]


@pytest.mark.parametrize("overrides,key,value,rule", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_validate_names_key_value_and_rule(overrides, key, value, rule):
    cfg = compose_job(overrides)  # composes: the problem is a range or a cross-field rule
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    msg = str(info.value)
    assert info.value.key == key
    assert f"{key}=" in msg and value in msg and rule in msg, msg


@pytest.mark.parametrize("overrides,mentions", [
    (["model.nonexistent=1"], "model.nonexistent"),
    (["regularizer=[l2]", "regularizer.l2.lamda=0.1"], "regularizer.l2.lamda"),
    (["regularizer=[foo]"], "regularizer/foo"),
    (["optim=rmsprop"], "rmsprop"),
    (["data=mnist"], "mnist"),
])
def test_unknown_option_fails_at_compose(overrides, mentions):
    with pytest.raises(COMPOSE_ERRORS) as info:
        compose_job(overrides)
    assert mentions in str(info.value)


@pytest.mark.parametrize("override,key", [
    ("model.hidden=abc", "model.hidden"),
    ("data.batch_size=abc", "data.batch_size"),
    ("regularizer.noise.sigma=abc", "regularizer.noise.sigma"),
    ("members.seeds=[a]", "members.seeds"),
    ("model.init.perturb_ulps=1.5", "model.init.perturb_ulps"),
])
def test_type_error_fails_at_compose(override, key):
    extra = ["regularizer=[noise]"] if "noise" in override else []
    with pytest.raises(COMPOSE_ERRORS) as info:
        compose_job(extra + [override])
    assert key in str(info.value)


@pytest.mark.parametrize("value", ["abc", "null", "2.5"])
def test_trainer_max_epochs_type_error_is_caught(value):
    """A bad trainer.max_epochs fails at compose time, or at the latest with a ConfigError."""
    try:
        cfg = compose_job([f"trainer.max_epochs={value}"])
    except COMPOSE_ERRORS as e:
        assert "max_epochs" in str(e)
        return
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs"):
        validate(cfg)


# --- through the command line ---

HEAVY = ("torch", "pytorch_lightning", "mlflow")


@pytest.mark.parametrize("module, overrides, key", [
    ("regstudy.train", ["members.seeds=[]"], "members.seeds"),
    ("regstudy.train", ["experiment=l2", "members.strengths=[0.0,-1.0]"], "members.strengths[1]"),
    ("regstudy.search", ["experiment=l2", "search.batch=0"], "search.batch"),
    ("regstudy.train", ["compute=fast"], "compute"),
])
def test_the_cli_refuses_bad_input_before_importing_torch_lightning_or_mlflow(tmp_path, module, overrides, key):
    """A typo costs a second, not the ten that those imports take: -X importtime lists
    every module the process imported, and none of them may be among them."""
    env = {k: v for k, v in os.environ.items() if k != "REGSTUDY_CONF"}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", module, *overrides], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"invalid config: {key}=" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "regstudy.config" in imported  # the listing is there
    assert not {m for m in imported if m.split(".")[0] in HEAVY}
    assert list(tmp_path.iterdir()) == []  # no outputs/, no mlflow.db


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="a GPU is here")
def test_a_gpu_asked_for_where_there_is_none_is_refused_before_training(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "REGSTUDY_CONF"}
    proc = subprocess.run([sys.executable, "-m", "regstudy.train", "trainer.accelerator=gpu"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "invalid config: trainer.accelerator='gpu'; allowed: cpu or auto: torch finds no CUDA or MPS" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no outputs/, no mlflow.db


# --- through the DVC train stage's CLI ---

STUDY = {"datasets": ["signal"], "families": ["l2"], "seeds": [0], "by_dataset": {"signal": {"epochs": 1}},
         "overrides": ["model.hidden=[4]"], "strengths": {"l2": [0.0, 0.001]}}


def run_stage(tmp_path: Path, study: dict) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"study": study}))
    env = {k: v for k, v in os.environ.items() if k != "REGSTUDY_CONF"}
    return subprocess.run([sys.executable, "-m", "regstudy.stages.train", "--dataset", "signal",
                           "--family", "l2", "--conf", str(CONF)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def write_signal(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    save_npz(tmp_path / "data" / "signal.npz", make_dataset(
        "signal", dict(n_train=20, n_val=10, n_test=10, noise=0.2, n_components=2, phase_std=1.0), [0]))


def assert_nothing_written(tmp_path: Path, before: set[str]) -> None:
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "mlflow.db").exists()
    assert {p.name for p in tmp_path.iterdir()} == before  # no outputs/, mlartifacts/ either


def test_stage_rejects_bad_strength_before_anything_runs(tmp_path):
    write_signal(tmp_path)  # the data are there: only the strength is wrong
    before = {"params.yaml", "data"}
    proc = run_stage(tmp_path, {**STUDY, "strengths": {"l2": [0.0, -1.0]}})
    assert proc.returncode != 0
    assert "members.strengths[1]" in proc.stderr and "-1.0" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert_nothing_written(tmp_path, before)


def test_stage_reports_missing_data_file(tmp_path):
    proc = run_stage(tmp_path, STUDY)
    assert proc.returncode != 0
    assert str(tmp_path.resolve() / "data" / "signal.npz") in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert_nothing_written(tmp_path, {"params.yaml"})


# --- a dataset's own seeds (study.by_dataset.<name>.seeds): the generate, csv and train stages ---


@pytest.mark.parametrize("seeds", [[0, 0], [-1], [], "0", [True], [0.5]])
@pytest.mark.parametrize("command", [["regstudy.stages.generate"], ["regstudy.stages.generate", "--csv", "mine"],
                                     ["regstudy.stages.train", "--family", "l2"],
                                     ["regstudy.stages.train", "--family", "l2", "--dataset", "signal"],
                                     ["regstudy.stages.train", "--csv", "mine"]],
                         ids=["generate", "csv", "train", "train one job", "train_csv"])
def test_stages_refuse_bad_dataset_seeds_naming_the_key_before_writing(tmp_path, command, seeds):
    """Exit 2 with the params key (study.by_dataset.signal.seeds, or csv.mine.seeds for
    the CSV file's stages), the value and the rule, and nothing written: no data file, no
    results, no MLflow store (a valid study.seeds beside it changes nothing)."""
    signal = dict(n_train=20, n_val=10, n_test=10, noise=0.2, n_components=2, phase_std=1.0)
    study = {**STUDY, "seeds": [0, 1], "by_dataset": {"signal": {"epochs": 1, "seeds": seeds}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "data": {"seed": 0, "signal": signal}, "study": study,
        "csv": {"mine": {"path": "my.csv", "target": "y", "epochs": 1, "seeds": seeds}}}))
    env = {**{k: v for k, v in os.environ.items() if k != "REGSTUDY_CONF"}, "REGSTUDY_WARM": "0"}
    proc = subprocess.run([sys.executable, "-m", *command, *(["--conf", str(CONF)] if "train" in command[0] else [])],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    key = "csv.mine.seeds" if "mine" in command else "study.by_dataset.signal.seeds"
    assert proc.returncode == 2, proc.stderr
    assert f"{key}={seeds!r}" in proc.stderr, proc.stderr
    assert "a non-empty list of distinct integers >= 0" in proc.stderr and "Traceback" not in proc.stderr
    assert_nothing_written(tmp_path, {"params.yaml"})


def test_a_jobs_cost_counts_its_members_with_the_datasets_own_seeds(tmp_path):
    """The train stage orders its jobs by cost, longest first: three times the seeds on a
    dataset is three times its job's cost, as is three times the family's strengths."""
    from regstudy.stages.train import job_cost

    write_signal(tmp_path)
    base = {**STUDY, "seeds": [0, 1]}
    cost = job_cost(base, "signal", "l2", tmp_path / "data", CONF)
    own = {**base, "by_dataset": {"signal": {"epochs": 1, "seeds": [0, 1, 2, 3, 4, 5]}}}
    assert cost > 0 and job_cost(own, "signal", "l2", tmp_path / "data", CONF) == pytest.approx(3 * cost)
    wider = {**base, "strengths": {"l2": [0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0]}}
    assert job_cost(wider, "signal", "l2", tmp_path / "data", CONF) == pytest.approx(3 * cost)
