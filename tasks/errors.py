"""Exceptions every layer may raise; kept apart so that no module imports another for them."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the setting."""


class InputError(ValueError):
    """Input a user gave (a text, a file, an argument) cannot be used; the message says which."""


class Skip(Exception):  # noqa: N818 - it is an outcome, not an error
    """Nothing to do for this step; the message says why (the DAG shows a skipped task)."""
