"""Every error taskq raises is in one tree under ``taskq.TaskqError``, written in taskq/errors.py.

Callers catch ``TaskqError`` and nothing else; a second class of the same name (there was
a second ``Unroutable``) would make ``except`` catch the wrong one.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import click

import taskq
from taskq import errors

# Raised by a task to ask for a retry: a request, not a failure (its docstring says why).
NOT_FAILURES = {errors.Retry}


def taskq_exception_classes() -> list[type[BaseException]]:
    found = []
    for module_info in pkgutil.walk_packages(taskq.__path__, "taskq."):
        if module_info.name == "taskq.__main__":
            continue  # runs the command
        if module_info.name.startswith("taskq.dashboard.") and module_info.name != "taskq.dashboard.feed":
            continue  # the web app needs the dashboard extra; feed.py is the one with errors
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found.append(value)
    return found


def test_every_taskq_exception_is_a_taskq_error():
    outside = [
        f"{cls.__module__}.{cls.__qualname__}" for cls in taskq_exception_classes()
        if not issubclass(cls, errors.TaskqError) and cls not in NOT_FAILURES
        and not issubclass(cls, click.ClickException)  # the CLI's exit-2 mistakes: click prints them
    ]
    assert not outside, f"exception classes outside the TaskqError tree: {outside}"


def test_error_classes_live_in_errors_py_unless_they_are_wire_errors():
    # The embedded transport's errors also subclass py-amqp's, so kombu treats them as
    # RabbitMQ's own: they stay beside the transport; every other one is in errors.py.
    elsewhere = [
        f"{cls.__module__}.{cls.__qualname__}" for cls in taskq_exception_classes()
        if cls.__module__ not in ("taskq.errors", "taskq.embedded.transport")
        and not issubclass(cls, click.ClickException)
    ]
    assert not elsewhere, f"error classes defined outside taskq/errors.py: {elsewhere}"


def test_no_two_error_classes_share_a_name():
    names: dict[str, list[str]] = {}
    for cls in taskq_exception_classes():
        names.setdefault(cls.__name__, []).append(cls.__module__)
    assert not {name: modules for name, modules in names.items() if len(modules) > 1}
