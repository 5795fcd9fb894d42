"""The DVC stages: ``check``, ``generate`` (and ``csv``), ``train`` (one per family),
``train_csv`` (one per CSV file) and ``report``."""

from __future__ import annotations

from pathlib import Path


def read_params(path: str | Path) -> dict:
    """``params.yaml`` as a dict (libyaml's safe loader where PyYAML has it: 8x faster than
    the pure-Python one, the same values); every job and stage reads it."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(Path(path).read_text(), Loader=loader) or {}


# The keys of a CSV entry (``csv.<name>`` in params.yaml): the file and its split, then
# how its own stage (``train_csv@<name>``) trains every family of the study on it.
CSV_FILE_KEYS = ("path", "target", "task", "val_fraction", "test_fraction")
CSV_STUDY_KEYS = ("epochs", "overrides", "seeds")


def dataset_settings(study: dict, name: str, csv: dict | None = None) -> tuple[str, object]:
    """Where params.yaml sets dataset ``name``'s epochs, overrides and seeds, and what it
    holds there: ``csv.<name>`` for an entry of ``csv`` (a CSV file's own stage), else
    ``study.by_dataset.<name>``."""
    if name in (csv or {}):
        return f"csv.{name}", csv[name]
    return f"study.by_dataset.{name}", (study.get("by_dataset") or {}).get(name)


def dataset_seeds(study: dict, name: str, csv: dict | None = None) -> list[int]:
    """The seeds of dataset ``name`` in ``params.yaml``'s ``study`` (and ``csv``): its own
    ``seeds`` (``study.by_dataset.<name>.seeds``, or ``csv.<name>.seeds`` for a CSV file)
    where given, else ``study.seeds`` (default ``[0]``).

    Its data file holds one draw per seed, and every job on it trains its strengths over
    these seeds. A value outside the rule (a non-empty list of distinct integers >= 0) is
    a ConfigError naming its key.
    """
    where, own = dataset_settings(study, name, csv)
    key, seeds = ((f"{where}.seeds", own["seeds"]) if isinstance(own, dict) and "seeds" in own
                  else ("study.seeds", study.get("seeds", [0])))
    if not (isinstance(seeds, list) and seeds
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
            and len(set(seeds)) == len(seeds)):
        from ..config import ConfigError  # Hydra's imports only for a bad value

        raise ConfigError(key, seeds, "a non-empty list of distinct integers >= 0")
    return seeds
