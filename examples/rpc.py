"""RPC: a fibonacci service answered by several servers.

    python -m examples.rpc

Three worker processes serve ``fib``. The client sends all requests at once; each reply
comes back on the client's own reply queue, matched to its request by correlation id,
whichever server answered and in whatever order.
"""

from __future__ import annotations

import os

from examples._workers import running_workers
from taskq import App

app = App("rpc", default_queue="examples.rpc")


def fibonacci(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


@app.task
def fib(n: int) -> dict:
    return {"n": n, "fib": fibonacci(n), "server": os.getpid()}


def main() -> None:
    with running_workers(app, "examples.rpc:app", count=3, concurrency=1):
        requests = {n: fib.delay(n) for n in (10, 20, 30, 40, 50, 60, 70, 80, 90)}
        servers = set()
        for n, result in requests.items():
            reply = result.get(timeout=30)
            servers.add(reply["server"])
            print(f"fib({n}) = {reply['fib']}  (server {reply['server']})")
        print(f"{len(requests)} requests answered by {len(servers)} servers")
    app.close()


if __name__ == "__main__":
    main()
