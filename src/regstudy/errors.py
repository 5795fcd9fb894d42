"""The errors of bad input, at the bottom of the package: every layer raises them and the
entry points turn them into one line and exit code 2."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A config value outside what is allowed; names the key, the value and the rule."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"invalid config: {key}={value!r}; allowed: {allowed}")
