"""The DVC stages: ``generate``, ``train`` (one per family) and ``report``."""

from __future__ import annotations

from pathlib import Path


def read_params(path: str | Path) -> dict:
    """``params.yaml`` as a dict (libyaml's safe loader where PyYAML has it: 8x faster than
    the pure-Python one, the same values); every job and stage reads it."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(Path(path).read_text(), Loader=loader) or {}


def dataset_seeds(study: dict, name: str) -> list[int]:
    """The seeds of dataset ``name`` in ``params.yaml``'s ``study``: its own
    ``study.by_dataset.<name>.seeds`` where given, else ``study.seeds`` (default ``[0]``).

    Its data file holds one draw per seed, and every job on it (``train@<family>``,
    ``control@<family>``) trains its strengths over these seeds. A value outside the rule
    (a non-empty list of distinct integers >= 0) is a ConfigError naming its key.
    """
    own = (study.get("by_dataset") or {}).get(name)
    key, seeds = ((f"study.by_dataset.{name}.seeds", own["seeds"]) if isinstance(own, dict) and "seeds" in own
                  else ("study.seeds", study.get("seeds", [0])))
    if not (isinstance(seeds, list) and seeds
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
            and len(set(seeds)) == len(seeds)):
        from ..config import ConfigError  # Hydra's imports only for a bad value

        raise ConfigError(key, seeds, "a non-empty list of distinct integers >= 0")
    return seeds
