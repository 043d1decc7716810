"""User-facing errors.

Every error a user can cause (bad data file, unknown user, missing model, broken template, bad
config) is raised as a subclass of :class:`LLMRecError`. The CLI prints its message on one line and
exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LLMRecError(Exception):
    """Base class for errors caused by user input or the environment (not bugs)."""


class DataError(LLMRecError):
    """A data file is missing, malformed or inconsistent."""


class UnknownUserError(LLMRecError):
    """A user ID is not in the training data."""


class EmptyHistoryError(LLMRecError):
    """A user has no training interactions to build a prompt or profile from."""


class ConfigError(LLMRecError):
    """A config file or CLI override is invalid; the message names the field."""


class ModelNotFoundError(LLMRecError):
    """A model, adapter or asset could not be found locally."""


class TemplateError(LLMRecError):
    """A prompt template is missing or fails to render."""


class EngineUnavailableError(LLMRecError):
    """An inference engine's package is not installed or cannot start."""


class NotFittedError(LLMRecError):
    """``recommend`` was called before ``fit``."""


class BusyError(LLMRecError):
    """Another process holds a lock on the same output (e.g. an evaluation's run directory)."""
