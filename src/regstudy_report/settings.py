"""The report's decision settings: error rate, power, and each metric's region of practical
equivalence. Defaults here; ``params.yaml``'s ``report`` section overrides them (the report
stage reads it, so `dvc exp run -S report.alpha=0.01` re-runs the report only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path


class SettingsError(ValueError):
    """A bad ``report`` section: names the key, the value and what is allowed."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r}: allowed {allowed}")


@dataclass(frozen=True)
class Settings:
    alpha: float = 0.05  # family-wise error rate of each dataset's findings (Holm)
    power: float = 0.8  # for the detectable effect and the seeds an undetermined row needs
    # Region of practical equivalence, per metric: a difference inside ±margin does not
    # matter (R²: 2% of the variance explained; accuracy: one percentage point).
    equivalence: dict[str, float] = field(default_factory=lambda: {"r2": 0.02, "accuracy": 0.01})

    def margin(self, metric_name: str) -> float:
        """The equivalence margin of a metric, in its units."""
        try:
            return self.equivalence[metric_name]
        except KeyError:
            raise SettingsError(f"report.equivalence.{metric_name}", None,
                                f"a margin for every metric of the study (it has {sorted(self.equivalence)})") from None


def _number(key: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low < value < high) \
            or not math.isfinite(value):
        raise SettingsError(key, value, f"a number in ({low:g}, {high:g})")
    return float(value)


def settings_from(section: dict | None) -> Settings:
    """Settings from a ``report`` mapping (missing keys keep their defaults); unknown keys
    and values out of range raise :class:`SettingsError`."""
    section = dict(section or {})
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise SettingsError(f"report.{unknown[0]}", section[unknown[0]], f"one of the settings {sorted(known)}")
    out = {}
    if "alpha" in section:
        out["alpha"] = _number("report.alpha", section["alpha"], 0.0, 0.5)
    if "power" in section:
        out["power"] = _number("report.power", section["power"], 0.0, 1.0)
    if "equivalence" in section:
        margins = section["equivalence"]
        if not isinstance(margins, dict) or not margins:
            raise SettingsError("report.equivalence", margins, "a mapping metric -> margin (r2, accuracy)")
        given = {str(k): _number(f"report.equivalence.{k}", v, 0.0, math.inf) for k, v in margins.items()}
        out["equivalence"] = {**Settings().equivalence, **given}
    return Settings(**out)


def read_settings(params: str | Path | None) -> Settings:
    """The ``report`` section of a params file (defaults without a file or a section)."""
    if params is None:
        return Settings()
    import yaml

    path = Path(params)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise SettingsError(str(path), None, f"a readable file ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise SettingsError(str(path), None, f"valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(loaded, dict):
        raise SettingsError(str(path), type(loaded).__name__, "a mapping at the top level")
    return settings_from(loaded.get("report"))
