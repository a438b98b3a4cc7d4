"""Errors that carry a user-facing message.

Every error a user can fix (bad data, bad config, a model file that does not fit) derives from
:class:`ExpertsegError`. Each problem is one line: what is wrong, where, how to fix it. The command
line prints the lines and exits with code 2, without a traceback.
"""

from __future__ import annotations

__all__ = ["ExpertsegError", "DatasetError", "ConfigError", "ModelFileError", "TrackingError"]


class ExpertsegError(ValueError):
    """A problem the user can fix; ``problems`` holds one line per problem."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DatasetError(ExpertsegError):
    """The dataset on disk breaks the dataset contract (DATASET_SPEC v1)."""


class ConfigError(ExpertsegError):
    """A configuration file or ``--set`` override is invalid."""


class ModelFileError(ExpertsegError):
    """A checkpoint, model or adapter file cannot be used (corrupt, wrong architecture, ...)."""


class TrackingError(ExpertsegError):
    """The experiment tracker cannot be reached or used."""
