"""Finding the user's App from a ``module:attribute`` string, as ``-A`` gives it."""

from __future__ import annotations

import importlib
import os
import sys

from taskq.app import App
from taskq.errors import ConfigurationError


def load_app(path: str) -> App:
    """Import ``package.module:app`` (or ``package.module``, taking its ``app``).

    The current directory goes on sys.path first, as it would for ``python -m``, so
    ``taskq worker -A examples.shop:app`` works from a project's root.
    """
    module_name, _, attribute = path.partition(":")
    attribute = attribute or "app"
    if not module_name:
        raise ConfigurationError(f"-A {path!r}: expected 'module:app'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigurationError(f"-A {path!r}: no module named {exc.name!r}") from None
        raise
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise ConfigurationError(f"-A {path!r}: {module_name} has no taskq App named {attribute!r}")
    return app
