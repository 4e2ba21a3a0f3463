"""structlog set-up for workers: readable on a terminal, JSON lines when piped to a collector."""

from __future__ import annotations

import logging
import os
import sys

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

LEVELS = ("debug", "info", "warning", "error", "critical")


def configure_logging(level: str = "info", log_format: str = "auto") -> None:
    """Route structlog (and stdlib logging, e.g. kombu's) to stderr at ``level``.

    ``log_format``: "console", "json", or "auto" (console on a TTY, JSON otherwise).
    Task context (task name, id, queue, pid, attempt) comes from structlog's contextvars,
    bound by the worker around each run, so a task's own ``structlog.get_logger()`` lines
    carry it too.
    """
    numeric_level = logging.getLevelName(level.upper())
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    renderer = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_pid,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # One write() per line (PrintLogger writes the line and its newline separately), so
        # children sharing the supervisor's stderr never interleave two JSON records.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric_level, logging.WARNING), stream=sys.stderr, force=True)


def add_pid(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Every line names its process: the supervisor's own lines and a child's lines outside any task too."""
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def get_logger(**initial_values: object) -> FilteringBoundLogger:
    """A structlog logger; inside a task it already carries the task's context."""
    # structlog.get_logger is typed Any: what it returns is whatever configure() chose,
    # which configure_logging makes a filtering bound logger.
    logger: FilteringBoundLogger = structlog.get_logger(**initial_values)
    return logger
