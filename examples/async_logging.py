"""Asynchronous logging: a web app's request handlers enqueue log writes instead of doing them.

    python -m examples.async_logging [--requests 200] [--clients 8] [--write-ms 5]

The seed's second use case. A small web app (stdlib ``http.server``, a thread per request)
records one audit line per request. Synchronously, each handler appends the line to the
log file and ``fsync``s it — with a short extra pause standing in for slower storage (a
network disk, a log database: ``--write-ms``) — under a lock, since lines must not
interleave: concurrent requests queue up behind the writer. Queued, each handler only
publishes the line (``write_line.delay``, returning once the broker confirmed it) and a
log-writer worker persists the lines, one at a time, doing exactly the same slow write.
The example measures request latency from the clients, both ways, and checks that every
line reached the file.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from examples._workers import delete_queues, running_workers, wait_for
from taskq import App

QUEUE = "examples.async_logging"

app = App("async_logging", default_queue=QUEUE)
_file_lock = threading.Lock()


def slow_append(path: str, line: str, write_ms: float) -> None:
    """Append one line durably: write, flush, fsync, and the extra latency of slow storage."""
    with _file_lock, open(path, "a") as file:
        file.write(line + "\n")
        file.flush()
        os.fsync(file.fileno())
        time.sleep(write_ms / 1000)


@app.task(ignore_result=True)
def write_line(path: str, line: str, write_ms: float) -> None:
    slow_append(path, line, write_ms)


def make_handler(mode: str, log_path: str, write_ms: float):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: measure the handler, not TCP setup
        disable_nagle_algorithm = True  # or headers and body wait on delayed ACKs (40 ms)

        def do_GET(self) -> None:
            line = f"{time.time():.6f} GET {self.path} from {self.client_address[0]}"
            if mode == "sync":
                slow_append(log_path, line, write_ms)
            else:
                write_line.delay(log_path, line, write_ms)
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:
            pass

    return Handler


def load(port: int, requests: int, clients: int) -> list[float]:
    """``clients`` keep-alive connections sending ``requests`` GETs in all; each request's seconds."""

    def client(count: int) -> list[float]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        timings = []
        for n in range(count):
            started = time.perf_counter()
            connection.request("GET", f"/page/{n}")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            timings.append(time.perf_counter() - started)
        connection.close()
        return timings

    per_client = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        return [t for timings in pool.map(client, per_client) for t in timings]


def serve(mode: str, log_path: Path, write_ms: float, requests: int, clients: int) -> list[float]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(mode, str(log_path), write_ms))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        load(server.server_address[1], clients, clients)  # warm-up, not timed: one request per client
        return load(server.server_address[1], requests, clients)
    finally:
        server.shutdown()
        server.server_close()


def percentile(values: list[float], fraction: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(fraction * 100) - 1]


def lines_in(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--write-ms", type=float, default=5.0, help="extra latency of each durable write")
    arguments = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="taskq-async-logging-"))
    delete_queues(app, [QUEUE])

    sync_log = folder / "sync.log"
    sync = serve("sync", sync_log, arguments.write_ms, arguments.requests, arguments.clients)

    queued_log = folder / "queued.log"
    with running_workers(app, "examples.async_logging:app", concurrency=1, queues=[QUEUE]):
        queued = serve("queued", queued_log, arguments.write_ms, arguments.requests, arguments.clients)
        served = time.monotonic()
        expected = arguments.requests + arguments.clients  # with the warm-up's lines
        wait_for(lambda: lines_in(queued_log) >= expected, timeout=120, what="the log writer to persist every line")
        behind = time.monotonic() - served
    delete_queues(app, [QUEUE])
    app.close()

    print(f"{arguments.requests} requests from {arguments.clients} clients; each log write: "
          f"write + fsync + {arguments.write_ms:g} ms of slow storage")
    print(f"{'':<24}{'p50 ms':>8}{'p95 ms':>8}")
    for name, timings in (("synchronous log write", sync), ("queued (taskq)", queued)):
        print(f"{name:<24}{percentile(timings, 0.5) * 1000:8.1f}{percentile(timings, 0.95) * 1000:8.1f}")
    print(f"synchronous: {lines_in(sync_log)} lines written by the request handlers (with {arguments.clients} warm-up)")
    print(f"queued: {lines_in(queued_log)} lines written by the log-writer worker (with {arguments.clients} warm-up), "
          f"the last {behind:.2f} s after the last response")
    speedup = percentile(sync, 0.5) / percentile(queued, 0.5)
    print(f"median request latency is {speedup:.1f}x lower with the queue")


if __name__ == "__main__":
    main()
