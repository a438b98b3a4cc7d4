"""Components from outside the package: modules named in ``EXPERTSEG_PLUGINS``.

A lab's own loss term (or network, or scribble style) is one Python file that registers itself
with the usual decorator (``@register_term("my_term")``). Naming it in the environment makes every
command import it before it reads a config, so the config can name the component::

    EXPERTSEG_PLUGINS=my_lab.terms,/path/to/extra_term.py expertseg pretrain ... --config my.yaml

Entries are comma-separated module names (importable from ``sys.path``) or paths of ``.py`` files.
Plugins are code, so they come from the environment the user controls, never from a config file.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from experts.errors import ConfigError

__all__ = ["load_plugins", "ENV_VAR"]

ENV_VAR = "EXPERTSEG_PLUGINS"


def load_plugins(spec: str | None = None) -> list[str]:
    """Import every plugin of ``spec`` (default: the ``EXPERTSEG_PLUGINS`` variable); return their names.

    Raises:
        ConfigError: a module that cannot be found, or a file that does not exist.
    """
    spec = os.environ.get(ENV_VAR, "") if spec is None else spec
    loaded = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        if entry.endswith(".py"):
            path = Path(entry).expanduser()
            if not path.is_file():
                raise ConfigError(f"{ENV_VAR}: plugin file {path} not found")
            name = f"expertseg_plugin_{path.stem}"
            if name not in sys.modules:
                module_spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[name] = module
                module_spec.loader.exec_module(module)
            loaded.append(name)
            continue
        try:
            importlib.import_module(entry)
        except ModuleNotFoundError as err:
            raise ConfigError(f"{ENV_VAR}: plugin module {entry!r} cannot be imported ({err}); check the name and PYTHONPATH") from None
        loaded.append(entry)
    return loaded
