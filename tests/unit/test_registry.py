"""The registry of regularizers, walked: every registered regularizer has all its parts.

A regularizer is a module of ``src/regstudy/regularizers/`` listed in its ``REGISTRY``. It
needs ``conf/regularizer/<name>.yaml`` (its one key, listing every field of its config);
a ``conf/experiment/*.yaml`` that sweeps it (``members.sweep: <name>``) with a grid in
``params.yaml``'s ``study.strengths``, unless it is marked ``in_study = False``; a
hand-computed test in ``tests/unit/test_penalties.py`` (``@hand_computed("<name>")``); and the
operation its phase calls for. :func:`missing_parts` says what is missing, naming it.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_penalties
import yaml

from regstudy.config import RegularizerSet
from regstudy.regularizers import REGISTRY, Kind, Layers, Phase, Regularizer
from regstudy.regularizers.base import LOSS_PHASES, STEP_PHASES

ROOT = Path(__file__).resolve().parents[2]
HAND_COMPUTED = test_penalties.HAND_COMPUTED
KIND_PHASES = {Kind.PENALTY: LOSS_PHASES, Kind.STEP_OPERATOR: STEP_PHASES}


def missing_parts(registry: dict[str, Regularizer], root: Path = ROOT,
                  hand_computed: dict[str, list[str]] = HAND_COMPUTED) -> list[str]:
    """What each registered regularizer lacks, one line each naming it; [] if nothing."""
    problems: list[str] = []
    experiments = {p.stem: yaml.safe_load(p.read_text()) or {}
                   for p in sorted((root / "conf" / "experiment").glob("*.yaml"))}
    study = (yaml.safe_load((root / "params.yaml").read_text()) or {}).get("study") or {}
    grids = study.get("strengths") or {}
    for name, r in registry.items():
        def miss(what: str) -> None:
            problems.append(f"regularizer {name!r}: {what}")

        if r.name != name:
            miss(f"registered under a name other than its own ({r.name!r})")
        if not dataclasses.is_dataclass(r.config):
            miss(f"its config {r.config!r} is not a dataclass")
            continue
        fields = [f.name for f in dataclasses.fields(r.config)]
        if r.strength_key not in fields:
            miss(f"its strength_key {r.strength_key!r} is not a field of {r.config.__name__} {fields}")
        if r.has_proximal_step and "proximal" not in fields:
            miss(f"has a proximal step but {r.config.__name__} has no 'proximal' field")
        if r.layers is not Layers.NONE and "layer_scale" not in fields:
            miss(f"acts per layer ({r.layers.value}) but {r.config.__name__} has no 'layer_scale' field")

        conf = Path("conf") / "regularizer" / f"{name}.yaml"
        if not (root / conf).is_file():
            miss(f"no {conf}")
        else:
            body = yaml.safe_load((root / conf).read_text()) or {}
            if list(body) != [name]:
                miss(f"{conf} must hold the one key {name!r}, not {list(body)}")
            elif set(body[name] or {}) != set(fields):
                miss(f"{conf} must list every field of {r.config.__name__}: {fields} "
                     f"(it has {list(body[name] or {})})")

        sweeping = [e for e, body in experiments.items() if (body.get("members") or {}).get("sweep") == name]
        if r.in_study:
            if not sweeping:
                miss(f"no conf/experiment/*.yaml sweeps it (members.sweep: {name}); "
                     "or mark it in_study = False")
            elif not any(e in grids for e in sweeping):
                miss(f"no grid in params.yaml study.strengths for its experiments {sweeping}")

        tests = hand_computed.get(name, [])
        if not tests:
            miss(f'no hand-computed test in tests/unit/test_penalties.py (@hand_computed("{name}"))')
        for test in tests:
            if not callable(getattr(test_penalties, test, None)):
                miss(f"its hand-computed test {test} is not in tests/unit/test_penalties.py")

        phase, own = r.default_phase, type(r)
        if r.kind in KIND_PHASES and phase not in KIND_PHASES[r.kind]:
            miss(f"a {r.kind.value} acting in phase {phase.name}")
        if phase in LOSS_PHASES and own.penalty is Regularizer.penalty:
            miss("acts in the loss but defines no penalty()")
        if (phase in STEP_PHASES or r.has_proximal_step) and own.step_ is Regularizer.step_:
            miss("acts on the weights but defines no step_()")
        if phase not in (*LOSS_PHASES, *STEP_PHASES) and own.setup is Regularizer.setup:
            miss(f"acts in phase {phase.name}, so it must store what the training loop reads: define setup()")
    return problems


def test_every_registered_regularizer_has_all_its_parts():
    problems = missing_parts(REGISTRY)
    assert problems == [], "\n".join(problems)


def test_every_conf_regularizer_file_is_registered():
    files = sorted(p.stem for p in (ROOT / "conf" / "regularizer").glob("*.yaml") if p.stem != "none")
    assert [f for f in files if f not in REGISTRY] == []


def test_the_config_schema_is_the_registrys():
    assert [f.name for f in dataclasses.fields(RegularizerSet)] == list(REGISTRY)
    for name, r in REGISTRY.items():
        assert RegularizerSet.__dataclass_fields__[name].type == r.config | None


# --- a regularizer missing a part fails, naming it ---


@dataclass
class ProbeConfig:
    lam: float = 0.1


class Probe(Regularizer):
    """A penalty registered with nothing else: no conf, no experiment, no test, no penalty()."""

    name = "probe"
    config = ProbeConfig
    strength_key = "lam"
    kind = Kind.PENALTY
    default_phase = Phase.WEIGHT_PENALTY
    acts_on = "nothing"


def test_a_regularizer_registered_alone_fails_naming_each_missing_part():
    problems = missing_parts({**REGISTRY, "probe": Probe()})
    assert problems == [
        "regularizer 'probe': no conf/regularizer/probe.yaml",
        "regularizer 'probe': no conf/experiment/*.yaml sweeps it (members.sweep: probe); "
        "or mark it in_study = False",
        "regularizer 'probe': no hand-computed test in tests/unit/test_penalties.py (@hand_computed(\"probe\"))",
        "regularizer 'probe': acts in the loss but defines no penalty()",
    ]


def test_marked_not_in_the_study_it_needs_no_experiment():
    probe = type("OffStudy", (Probe,), {"in_study": False})()
    problems = missing_parts({"probe": probe})
    assert not any("experiment" in p for p in problems)
    assert any("no conf/regularizer/probe.yaml" in p for p in problems)


def study_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_a_registered_regularizer_without_its_experiment_fails_naming_it(tmp_path):
    root = study_copy(tmp_path)
    for p in (root / "conf" / "experiment").glob("*.yaml"):
        if (yaml.safe_load(p.read_text()).get("members") or {}).get("sweep") == "noise":
            p.unlink()
    assert missing_parts(REGISTRY, root) == [
        "regularizer 'noise': no conf/experiment/*.yaml sweeps it (members.sweep: noise); "
        "or mark it in_study = False"]


def test_a_registered_regularizer_without_a_grid_or_a_conf_key_fails_naming_it(tmp_path):
    root = study_copy(tmp_path)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for family in ("max_norm", "dropout_max_norm"):  # the two experiments that sweep max_norm
        del params["study"]["strengths"][family]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    conf = root / "conf" / "regularizer" / "dropout.yaml"
    conf.write_text(conf.read_text().replace("  mc_samples: 30\n", ""))
    assert missing_parts(REGISTRY, root) == [
        "regularizer 'dropout': conf/regularizer/dropout.yaml must list every field of DropoutConfig: "
        "['p', 'mc_samples'] (it has ['p'])",
        "regularizer 'max_norm': no grid in params.yaml study.strengths for its experiments "
        "['dropout_max_norm', 'max_norm']"]


def test_a_regularizer_without_a_hand_computed_test_fails_naming_it():
    without = {k: v for k, v in HAND_COMPUTED.items() if k != "early_stopping"}
    assert missing_parts(REGISTRY, hand_computed=without) == [
        "regularizer 'early_stopping': no hand-computed test in tests/unit/test_penalties.py "
        "(@hand_computed(\"early_stopping\"))"]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_regularizer_is_described_in_its_own_module(name):
    """What the guide and the docs read: its kind, phase, layers and what it acts on."""
    r = REGISTRY[name]
    assert isinstance(r.kind, Kind) and isinstance(r.default_phase, Phase) and r.acts_on
    assert r.__class__.__module__ == f"regstudy.regularizers.{name}"
