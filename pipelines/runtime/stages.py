"""The stage runs that other commands launch by name: ``tune --stage pretrain|adapt`` runs trials
of a stage, the bench runs pretrainings, adaptations and interactive evaluations. A command that runs another stage asks
for it here, by name, instead of importing that command's module; a stage's module is imported
only when the stage is run (so ``expertseg --help`` stays light).
"""

from __future__ import annotations

import importlib
from typing import Callable

from experts.errors import ConfigError

__all__ = ["STAGES", "stage_runner"]

#: stage name -> ``module:function`` of its run (keyword arguments as the command's options)
STAGES = {
    "pretrain": "pipelines.pretrain:pretrain",
    "adapt": "pipelines.adapt:adapt",
    "evaluate-interactive": "pipelines.evaluate_interactive:evaluate_interactive",
}


def stage_runner(name: str) -> Callable[..., dict]:
    """The run function of stage ``name`` (it returns the run's summary)."""
    try:
        module, function = STAGES[name].split(":")
    except KeyError:
        raise ConfigError(f"unknown stage {name!r}; known: {', '.join(STAGES)}") from None
    return getattr(importlib.import_module(module), function)
