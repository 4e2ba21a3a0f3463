"""``taskq worker --metrics-port``: every child's Prometheus metrics, served by the supervisor.

The children count (taskq/middleware/metrics.py) in prometheus_client's multiprocess
mode: each writes its values to files of its own in ``PROMETHEUS_MULTIPROC_DIR``, and the
supervisor's ``/metrics`` adds up the files of all of them (``MultiProcessCollector``), so a
scrape sees the worker, not whichever child answered. That mode is chosen when
prometheus_client is first imported, and the children inherit the supervisor's imports
by fork: so the directory is made, empty, and the variable set, before anything imports
prometheus_client, the app included (``MetricsExport.start`` comes first in the command).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from taskq.errors import ConfigurationError

if TYPE_CHECKING:
    from taskq.app import App

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's name, not ours
ALL_INTERFACES = "0.0.0.0"  # what Prometheus, on another machine, scrapes
INSTALL_HINT = "pip install 'taskq-rabbitmq[metrics]'"


class MetricsExport:
    """The multiprocess directory and the HTTP server of one supervisor; ``close`` removes both."""

    def __init__(self, port: int, directory: str, server: WSGIServer) -> None:
        self.port = port
        self.directory = directory
        self._server = server  # prometheus_client's WSGI server, answering on a thread of its own

    @classmethod
    def start(cls, port: int, host: str = ALL_INTERFACES) -> MetricsExport:
        """A fresh directory in ``PROMETHEUS_MULTIPROC_DIR``, and ``/metrics`` served from it.

        ConfigurationError, with nothing left behind, if prometheus_client is missing, was
        imported too early, or the port is taken.
        """
        if "prometheus_client" in sys.modules:
            raise ConfigurationError(f"--metrics-port: prometheus_client was imported before {MULTIPROC_DIR_ENV} "
                                     "could be set, so the children's metrics would stay in their own memory")
        directory = tempfile.mkdtemp(prefix="taskq-metrics-")
        os.environ[MULTIPROC_DIR_ENV] = directory
        try:
            return cls(port, directory, serve(host, port))
        except BaseException:
            remove(directory)
            raise

    def add_to(self, app: App) -> None:
        """Count in the app's children, unless the app counts already (``App(middleware=[PrometheusMetrics()])``)."""
        from taskq.middleware.metrics import PrometheusMetrics

        if not any(isinstance(m, PrometheusMetrics) for m in app.middleware):
            app.add_middleware(PrometheusMetrics())

    @property
    def url(self) -> str:
        return f"http://{socket.gethostname()}:{self.port}/metrics"

    def child_exited(self, pid: int) -> None:
        """Drop a reaped child's in-flight gauge (its counters stay: they count what it did)."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def forget_in_child(self) -> None:
        """In a forked child: close our copy of the listening socket (the server thread stayed behind),
        so a child outliving the supervisor can't hold the port."""
        self._server.socket.close()

    def close(self) -> None:
        """Stop serving, remove the directory and unset the variable; after the children are gone."""
        self._server.shutdown()
        self._server.server_close()
        remove(self.directory)


def serve(host: str, port: int) -> WSGIServer:
    """prometheus_client's own server, on a daemon thread, showing the sum of every process's files."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector
    except ImportError:
        raise ConfigurationError(f"--metrics-port needs prometheus_client: {INSTALL_HINT}") from None
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigurationError(f"--metrics-port: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return server


def remove(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    if os.environ.get(MULTIPROC_DIR_ENV) == directory:
        del os.environ[MULTIPROC_DIR_ENV]
