"""One error hierarchy for the engine.

Every failure a user can cause (a bad file, a bad option, an unwritable
folder) is raised as an :class:`AmcError` subclass whose message is one clear
line; the CLI prints it and exits with the class's ``exit_code``.
"""

from __future__ import annotations


class AmcError(Exception):
    """Base of every error the project raises on purpose."""

    exit_code: int = 1


class ParameterError(AmcError, ValueError):
    """An option or argument is out of range or inconsistent."""

    exit_code = 2


class AudioInputError(AmcError):
    """An input cannot be used: missing, not audio, corrupt, empty, NaN/Inf, too short, silent."""

    exit_code = 3


class AudioOutputError(AmcError):
    """An output cannot be written: missing or read-only folder, would overwrite an input, disk full."""

    exit_code = 4


class ProcessingError(AmcError):
    """The engine could not meet a contract (e.g. loudness target unreachable)."""

    exit_code = 5
