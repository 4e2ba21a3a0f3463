"""Finding the user's App from a ``module:attribute`` string, as ``-A`` gives it.

Whatever goes wrong is one ConfigurationError that points at the user's own code (file,
line and error): a traceback through click and importlib shows mostly frames the user
can do nothing about, and buries the one they can.
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import traceback

from taskq.app import App
from taskq.errors import ConfigurationError

# Frames in these folders are not the user's: the stdlib (importlib among it), installed
# packages, taskq itself.
LIBRARY_FOLDERS = tuple(
    os.path.join(folder, "")
    for folder in {sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    | {os.path.dirname(os.path.abspath(__file__))}
)


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
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigurationError(f"-A {path!r}: no module named {exc.name!r}") from None
        raise ConfigurationError(f"-A {path!r}: {where_it_failed(exc)}") from None
    except Exception as exc:  # anything the user's module raises while it is imported
        raise ConfigurationError(f"-A {path!r}: {where_it_failed(exc)}") from None
    app = getattr(module, attribute, None)
    if isinstance(app, App):
        return app
    if hasattr(module, attribute):
        problem = f"{module_name}.{attribute} is not a taskq App ({type(app).__name__})"
    else:
        problem = f"{module_name} has no attribute {attribute!r}"
    apps = sorted(name for name, value in vars(module).items() if isinstance(value, App))
    raise ConfigurationError(f"-A {path!r}: {problem}; its Apps: {', '.join(apps) or 'none'}")


def where_it_failed(exc: BaseException) -> str:
    """``file:line: Type: message`` at the deepest frame of the user's own code, on one line."""
    if isinstance(exc, SyntaxError) and exc.filename:  # raised by the compiler: no frame of its own
        location, message = f"{shown_path(exc.filename)}:{exc.lineno}: ", exc.msg
    else:
        files = [frame for frame in traceback.extract_tb(exc.__traceback__) if not frame.filename.startswith("<")]
        users = [frame for frame in files if not os.path.abspath(frame.filename).startswith(LIBRARY_FOLDERS)]
        deepest = users or files
        location = f"{shown_path(deepest[-1].filename)}:{deepest[-1].lineno}: " if deepest else ""
        message = str(exc)
    message = " ".join(message.split())
    return f"{location}{type(exc).__name__}{': ' + message if message else ''}"


def shown_path(filename: str) -> str:
    """Relative to the current directory when it is inside it, as a user would type it."""
    absolute = os.path.abspath(filename)
    relative = os.path.relpath(absolute)
    return absolute if relative.startswith(os.pardir) else relative
