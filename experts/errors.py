"""Errors that carry a user-facing message.

Every error a user can fix (bad data, bad config, a model file that does not fit) derives from
:class:`ExpertsegError`. Each problem is one line: what is wrong, where, how to fix it. The command
line prints the lines and exits with code 2, without a traceback.

A message never grows with a hostile input: a user value echoed in a message goes through
:func:`shorten` (at most :data:`MAX_ECHO` characters, computed without building the full text),
and :class:`ExpertsegError` folds each problem onto one line of at most :data:`MAX_LINE` characters
and keeps at most :data:`MAX_PROBLEMS` of them.
"""

from __future__ import annotations

import reprlib

__all__ = [
    "MAX_ECHO",
    "MAX_LINE",
    "MAX_PROBLEMS",
    "shorten",
    "ExpertsegError",
    "DatasetError",
    "ConfigError",
    "ModelFileError",
    "TrackingError",
]

#: Longest echo of a user value inside a message, in characters.
MAX_ECHO = 120
#: Longest problem line; longer ones are cut (a safety net: echoes are shortened where they are made).
MAX_LINE = 1000
#: Most problems one error lists; the rest are counted in a last line.
MAX_PROBLEMS = 100

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = _REPR.maxarray = 8
_REPR.maxdict = 6
_REPR.maxstring = _REPR.maxother = MAX_ECHO
_REPR.maxlong = 40


def shorten(value, limit: int = MAX_ECHO, *, quote: bool = True) -> str:
    """A user value for a message: its ``repr`` (or ``str`` with ``quote=False``) on one line, at most
    ``limit`` characters.

    Nested containers are summarised (``[[1, 2, ...], ...]``) without walking them whole, so a
    billion-element structure built from a few bytes of YAML costs microseconds here.

    Example:
        >>> shorten("x" * 500, 12)
        "'xxxxxxxx..."
    """
    text = value if not quote and isinstance(value, str) else _REPR.repr(value)
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: max(1, limit - 3)] + "..."


class ExpertsegError(ValueError):
    """A problem the user can fix; ``problems`` holds one line per problem."""

    def __init__(self, problems: str | list[str]):
        lines = [problems] if isinstance(problems, str) else list(problems)
        lines = [_one_line(str(p)) for p in lines]
        if len(lines) > MAX_PROBLEMS:
            lines = lines[:MAX_PROBLEMS] + [f"... and {len(lines) - MAX_PROBLEMS} more problems; fix these and run again"]
        self.problems = lines
        super().__init__("\n".join(self.problems))


def _one_line(text: str) -> str:
    text = " ".join(text.splitlines()) if "\n" in text or "\r" in text else text
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


class DatasetError(ExpertsegError):
    """The dataset on disk breaks the dataset contract (DATASET_SPEC v1)."""


class ConfigError(ExpertsegError):
    """A configuration file or ``--set`` override is invalid."""


class ModelFileError(ExpertsegError):
    """A checkpoint, model or adapter file cannot be used (corrupt, wrong architecture, ...)."""


class TrackingError(ExpertsegError):
    """The experiment tracker cannot be reached or used."""
