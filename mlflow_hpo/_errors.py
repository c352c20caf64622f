"""Exceptions raised by mlflow_hpo."""

from __future__ import annotations


class HpoError(Exception):
    """Base class of every error that mlflow_hpo raises on purpose."""


class ConfigError(HpoError, ValueError):
    """Invalid user input, detected before the first trial.

    The message is one line that names the offending value and the fix. The
    command-line entry points turn it into exit status 2.
    """


class TrialError(HpoError):
    """A single trial could not be evaluated; only that trial fails."""
