"""Hello world: one task, one result.

    python -m examples.hello
"""

from __future__ import annotations

from examples._workers import running_workers
from taskq import App

app = App("hello")


@app.task
def greet(name: str) -> str:
    return f"Hello, {name}!"


def main() -> None:
    with running_workers(app, "examples.hello:app"):
        print(greet.delay("world").get(timeout=30))
    app.close()


if __name__ == "__main__":
    main()
