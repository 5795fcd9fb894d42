"""DVC stage ``check``: the whole study of ``params.yaml``, checked before anything runs.

`dvc repro` deletes a stage's outputs before it runs the stage, and a train stage checked
its own jobs one at a time: a typo in one dataset's settings was found after the other
datasets had trained, with the family's results already deleted. This stage runs first
(``generate``, the ``csv`` stages and through them every train stage depend on its
output), checks every key of ``params.yaml`` and composes every job of the study with
Hydra, and writes ``data/.study-checked`` only if all is well. A problem is reported
naming the ``params.yaml`` key, its value and what is allowed, and the stage exits 2:
nothing trains and nothing is deleted.

Usage: ``python -m regstudy.stages.check [--params params.yaml] [--conf conf] [--out data/.study-checked]``
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ..paths import CONFIG_DIR
from . import CSV_FILE_KEYS, CSV_STUDY_KEYS, dataset_seeds, dataset_settings, read_params

TOP_KEYS = ("data", "csv", "study", "report")
STUDY_KEYS = ("datasets", "families", "controls", "seeds", "by_dataset", "overrides", "strengths")
DATASET_KEYS = ("epochs", "overrides", "seeds")
CONTROL_KEYS = ("datasets", "families", "overrides")
CHECKED = "the study of params.yaml was checked by regstudy.stages.check\n"  # the same bytes every time


@dataclass
class Problem:
    """A value of ``params.yaml`` outside what is allowed."""

    key: str
    value: object
    allowed: str

    def __str__(self) -> str:
        return f"{self.key}={self.value!r} in params.yaml; allowed: {self.allowed}"


def _unknown(section: dict, prefix: str, known) -> list[Problem]:
    return [Problem(f"{prefix}.{key}", section[key], f"one of the keys {list(known)}")
            for key in section if key not in known]


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _numbers(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def check_data(params: dict) -> list[Problem]:
    """``data``: the task seed, and each dataset's parameters, drawn once to be sure."""
    from ..data import GENERATORS, make_dataset

    data = params.get("data") or {}
    if not isinstance(data, dict):
        return [Problem("data", data, "a mapping: seed, and each dataset's parameters")]
    problems = []
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        problems.append(Problem("data.seed", seed, "an integer >= 0"))
        seed = 0
    for name, values in data.items():
        if name == "seed":
            continue
        if name not in GENERATORS:
            problems.append(Problem(f"data.{name}", values, f"a built-in dataset: one of {sorted(GENERATORS)} "
                                                           "(your own CSV files go under csv)"))
            continue
        try:
            make_dataset(name, dict(values or {}), seeds=[0], task_seed=seed)
        except (TypeError, ValueError) as e:
            problems.append(Problem(f"data.{name}", values, f"the parameters of {name} ({e})"))
    return problems


def check_csv(params: dict, root: Path) -> list[Problem]:
    """``csv``: each entry's file, read and split once (its own stage checks it again)."""
    from ..data import GENERATORS, CsvError, make_csv_dataset

    entries = params.get("csv") or {}
    if not isinstance(entries, dict):
        return [Problem("csv", entries, "a mapping name -> {path, target, ...}")]
    problems = []
    for name, entry in entries.items():
        if not isinstance(entry, dict) or not entry.get("path") or not entry.get("target"):
            problems.append(Problem(f"csv.{name}", entry, "a mapping with path, target and epochs (and optionally "
                                                         "task, val_fraction, test_fraction, overrides, seeds)"))
            continue
        problems += _unknown(entry, f"csv.{name}", CSV_FILE_KEYS + CSV_STUDY_KEYS)
        if name in GENERATORS:  # both would write data/<name>.npz
            problems.append(Problem(f"csv.{name}", entry, f"a name that is not a built-in dataset's {sorted(GENERATORS)}"))
        path = Path(entry["path"])
        try:
            make_csv_dataset({**entry, "path": path if path.is_absolute() else root / path}, [0])
        except (CsvError, OSError, ValueError) as e:
            problems.append(Problem(f"csv.{name}", entry, f"a readable CSV file with its target column ({e})"))
    return problems


def check_report(params: dict) -> list[Problem]:
    """``report``: the report stage's settings (:mod:`regstudy_report.settings`)."""
    from regstudy_report.settings import SettingsError, settings_from

    try:
        settings_from(params.get("report"))
    except SettingsError as e:
        return [Problem(e.key, e.value, e.allowed)]
    return []


def check_study(params: dict, conf: Path) -> list[Problem]:
    """``study``: its keys, datasets, families, seeds, epochs and grids; then every job of
    the study composed with Hydra and validated (:func:`compose_and_validate`)."""
    study = params.get("study")
    if not isinstance(study, dict):
        return [Problem("study", study, f"a mapping with the keys {list(STUDY_KEYS)}")]
    problems = _unknown(study, "study", STUDY_KEYS)
    known = [k for k in (params.get("data") or {}) if k != "seed"]
    csv = params.get("csv") if isinstance(params.get("csv"), dict) else {}
    families = sorted(p.stem for p in (conf / "experiment").glob("*.yaml"))
    controls = study.get("controls") or {}
    if not isinstance(controls, dict):
        problems.append(Problem("study.controls", controls, f"a mapping with the keys {list(CONTROL_KEYS)}"))
        controls = {}
    problems += _unknown(controls, "study.controls", CONTROL_KEYS)
    lists = {"study.datasets": study.get("datasets"), "study.families": study.get("families"),
             "study.controls.datasets": controls.get("datasets", []),
             "study.controls.families": controls.get("families", [])}
    for key, value in lists.items():
        if not _strings(value) or (key in ("study.datasets", "study.families") and not value):
            problems.append(Problem(key, value, "a list of names" + (", not empty" if "controls" not in key else "")))
    if problems:
        return problems
    for key in ("study.datasets", "study.controls.datasets"):
        problems += [Problem(f"{key}[{i}]", d, f"a built-in dataset of data: one of {known}"
                             + (f" (csv.{d} is studied by its own stage train_csv@{d}, with its epochs in "
                                f"csv.{d}.epochs: leave it out of {key})" if d in csv else ""))
                     for i, d in enumerate(lists[key]) if d not in known]
    for key in ("study.families", "study.controls.families"):
        problems += [Problem(f"{key}[{i}]", f, f"a family of conf/experiment: one of {families}")
                     for i, f in enumerate(lists[key]) if f not in families]
    strengths = study.get("strengths") or {}
    for family in [*lists["study.families"], *lists["study.controls.families"]]:
        if not _numbers(strengths.get(family)):
            problems.append(Problem(f"study.strengths.{family}", strengths.get(family),
                                    "a non-empty list of numbers: the family's grid"))
    for key in ("overrides",):
        if not _strings(study.get(key, [])):
            problems.append(Problem(f"study.{key}", study.get(key), "a list of Hydra overrides (strings)"))
    if not _strings(controls.get("overrides", [])):
        problems.append(Problem("study.controls.overrides", controls.get("overrides"),
                                "a list of Hydra overrides (strings)"))
    settled = []  # the datasets and families whose own settings passed: their jobs can be composed
    for name in dict.fromkeys([*lists["study.datasets"], *lists["study.controls.datasets"], *csv]):
        studied = name in known or name in csv
        found = _check_dataset_settings(study, name, csv) if studied else []
        problems += found
        if studied and not found:
            settled.append(name)
    lists["csv"] = [name for name in csv if name in settled]
    good = {key: [v for v in value if v in settled or (v in families and _numbers(strengths.get(v)))]
            for key, value in lists.items()}
    if any(p.key.split("[")[0] in ("study.overrides", "study.controls.overrides") for p in problems):
        return problems
    return problems + compose_and_validate(study, good, conf, csv)


def _check_dataset_settings(study: dict, name: str, csv: dict) -> list[Problem]:
    """A dataset's epochs, overrides and seeds: ``study.by_dataset.<name>``, or for a CSV
    file the same keys of ``csv.<name>``."""
    from ..config import ConfigError

    key, own = dataset_settings(study, name, csv)
    if not isinstance(own, dict):
        return [Problem(key, own, "for every dataset of the study, a mapping with epochs (and overrides, seeds)")]
    problems = [] if name in csv else _unknown(own, key, DATASET_KEYS)
    epochs = own.get("epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        problems.append(Problem(f"{key}.epochs", epochs, "an integer >= 1"))
    if not _strings(own.get("overrides", [])):
        problems.append(Problem(f"{key}.overrides", own.get("overrides"), "a list of Hydra overrides (strings)"))
    try:
        dataset_seeds(study, name, csv)
    except ConfigError as e:
        problems.append(Problem(e.key, e.value, e.allowed))
    return problems


# Where a job's Hydra key comes from in params.yaml (the rest: an override of a list);
# {own}: study.by_dataset.<dataset>, or csv.<name> for a CSV file.
_FROM_PARAMS = {"trainer.max_epochs": "{own}.epochs", "members.strengths": "study.strengths.{family}",
                "members.seeds": "{own}.seeds (else study.seeds)"}


def _from_params(key: str, family: str, dataset: str, study: dict, csv: dict) -> str:
    return _FROM_PARAMS[key].format(own=dataset_settings(study, dataset, csv)[0], family=family)


def compose_and_validate(study: dict, lists: dict, conf: Path, csv: dict) -> list[Problem]:
    """Every job of the study (families x datasets, the controls, and the families on each
    CSV file of ``csv``) composed with the
    overrides its train stage will give it, and validated; a failure is named by the
    ``params.yaml`` key it comes from. A job its stage skips (label smoothing on a
    regression set) is skipped here too."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ..config import ConfigError, register_configs, validate
    from ..jobspec import check_device
    from ..regularizers import not_applicable
    from .train import study_overrides

    jobs = [(f, d, False) for f in lists["study.families"] for d in lists["study.datasets"]]
    jobs += [(f, d, True) for f in lists["study.controls.families"] for d in lists["study.controls.datasets"]]
    jobs += [(f, d, False) for f in lists["study.families"] for d in lists.get("csv", [])]
    problems: list[Problem] = []
    seen: set[str] = set()
    register_configs()
    with initialize_config_dir(str(conf.resolve()), version_base="1.3"):  # once: a compose is then 10 ms
        for family, dataset, control in jobs:
            overrides = study_overrides(study, dataset, family, Path("results"), control, csv)
            try:
                cfg = compose("train", overrides=overrides)
                if not_applicable(cfg.regularizer, cfg.data.task):
                    continue  # its stage skips it, saying why
                validate(cfg)
                check_device(cfg)  # a GPU asked for where there is none; compute=exact where it cannot run
            except ConfigError as e:
                problem = _named(e.key, e.value, e.allowed, study, family, dataset, control, csv)
            except (HydraException, OmegaConfBaseException) as e:
                problem = _hydra_problem(str(e), study, family, dataset, control, csv)
            else:
                continue
            if str(problem) not in seen:  # the same bad value reported once, not once per job
                seen.add(str(problem))
                problems.append(problem)
    return problems


def _override_lists(study: dict, dataset: str, control: bool, csv: dict) -> dict[str, list[str]]:
    key, own = dataset_settings(study, dataset, csv)
    lists = {"study.overrides": study.get("overrides") or [], f"{key}.overrides": (own or {}).get("overrides") or []}
    if control:
        lists["study.controls.overrides"] = (study.get("controls") or {}).get("overrides") or []
    return lists


def _named(key: str, value, allowed: str, study: dict, family: str, dataset: str, control: bool,
           csv: dict) -> Problem:
    """A job's invalid Hydra key as the params.yaml key that set it."""
    if key in _FROM_PARAMS:
        return Problem(_from_params(key, family, dataset, study, csv), value, allowed)
    for list_key, overrides in _override_lists(study, dataset, control, csv).items():
        for i, override in enumerate(overrides):
            if override.lstrip("+~").split("=")[0] == key:
                return Problem(f"{list_key}[{i}]", override, f"{key}: {allowed}")
    return Problem(f"the job {family} on {dataset}: {key}", value, allowed)


def _hydra_problem(message: str, study: dict, family: str, dataset: str, control: bool, csv: dict) -> Problem:
    """Hydra's error as the params.yaml value that caused it: an override it names, else
    the job's dataset or family, whose config it could not find."""
    first = message.strip().splitlines()[0] if message.strip() else message
    for list_key, overrides in _override_lists(study, dataset, control, csv).items():
        for i, override in enumerate(overrides):
            if override in message or override.split("=")[0].lstrip("+~") in first:
                return Problem(f"{list_key}[{i}]", override, f"a valid Hydra override ({' '.join(message.split())})")
    for key in _FROM_PARAMS:
        if key in first:
            return Problem(_from_params(key, family, dataset, study, csv), None, " ".join(message.split()))
    return Problem(f"the job {family} on {dataset}", None, " ".join(message.split()))


def check(params_path: Path, conf: Path, root: Path) -> list[Problem]:
    """Every problem of the study in ``params_path``, in the file's order."""
    try:
        params = read_params(params_path)
    except OSError as e:
        return [Problem("params.yaml", str(params_path), f"a readable file ({e.strerror})")]
    except Exception as e:  # noqa: BLE001 - yaml's parse errors: one message, not a traceback
        return [Problem("params.yaml", str(params_path), f"valid YAML ({' '.join(str(e).split())})")]
    if not isinstance(params, dict):
        return [Problem("params.yaml", params, "a mapping with the keys " + ", ".join(TOP_KEYS))]
    problems = [Problem(key, "...", f"one of the keys {list(TOP_KEYS)}") for key in params if key not in TOP_KEYS]
    problems += check_data(params) + check_csv(params, root) + check_report(params)
    return problems + check_study(params, conf)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m regstudy.stages.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--conf", default=str(CONFIG_DIR), help="config dir (the stage's deps)")
    parser.add_argument("--out", default="data/.study-checked", help="written only when the study passes")
    args = parser.parse_args(argv)
    problems = check(Path(args.params), Path(args.conf), Path(args.params).resolve().parent)
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        print(f"{len(problems)} problem{'s' * (len(problems) > 1)} in {args.params}: nothing was run", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(CHECKED)
    print(f"{args.params}: the study checks out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
