"""Task options owned by middleware: each is declared once, by its middleware (``task_options``)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from taskq.errors import ConfigurationError
from taskq.middleware.base import Middleware


def task_settings(middleware: Iterable[Middleware], core_options: Iterable[str], label: str,
                  given: Mapping[str, Any]) -> dict[str, Any]:
    """The middleware-owned options of task ``label``, defaults filled in, each checked by its owner.

    An option no middleware owns is refused naming the known ones: a misspelt ``max_retry``
    must fail at import, not silently never retry.
    """
    middleware = list(middleware)
    settings: dict[str, Any] = {}
    for owner in middleware:
        settings.update(owner.task_options)
    unknown = sorted(set(given) - set(settings))
    if unknown:
        known = ", ".join(sorted({*core_options, *settings}))
        raise ConfigurationError(f"task {label}: unknown option {', '.join(unknown)}; the options are {known}")
    settings.update(given)
    for owner in middleware:
        try:
            owner.check_task_options(settings)
        except ValueError as exc:
            raise ConfigurationError(f"task {label}: {exc}") from None
    return settings
