"""The flash sale's HTTP front: ``POST /buy`` enqueues one attempt and answers with its outcome.

    python -m examples.flash_sale.front --port 8000
    curl -X POST 'localhost:8000/buy?user=ann'         # {"attempt": "...", "outcome": "bought"}
    curl localhost:8000/stats                           # {"orders": 1, "stock_left": 99, ...}

A client may send ``attempt=ID`` to make a retried request idempotent: the same id gets the
same answer and never a second order.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from examples.flash_sale import app, buy, counts, open_db


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        url = urlparse(self.path)
        if url.path != "/buy":
            return self.answer(404, {"error": "POST /buy"})
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        attempt = query.get("attempt") or uuid.uuid4().hex
        try:
            outcome = buy.delay(attempt, query.get("user", "anonymous")).get(timeout=30)
        except TimeoutError:
            return self.answer(503, {"attempt": attempt, "error": "no answer yet: retry with the same attempt id"})
        self.answer(200, {"attempt": attempt, "outcome": outcome})

    def do_GET(self) -> None:
        if urlparse(self.path).path != "/stats":
            return self.answer(404, {"error": "GET /stats"})
        with open_db() as db:
            self.answer(200, counts(db))

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # one line per request is noise in a burst
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    arguments = parser.parse_args()
    open_db().close()  # create the database and its stock before the first request
    server = ThreadingHTTPServer(("127.0.0.1", arguments.port), Handler)
    server.daemon_threads = True
    # SIGTERM (honcho, systemd) stops serving; shutdown() must come from another thread.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"flash sale front on http://127.0.0.1:{arguments.port} (POST /buy, GET /stats)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.close()
    print("flash sale front stopped", flush=True)


if __name__ == "__main__":
    main()
