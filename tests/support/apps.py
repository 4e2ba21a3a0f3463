"""The app the worker subprocesses of the tests load (``-A tests.support.apps:app``).

Tasks leave their side effects in files named by the test, so a test can count how many
times each task really ran and in which process.
"""

from __future__ import annotations

import os
import time

from taskq import App

app = App("tests")


def append_line(path: str, line: str) -> None:
    # One write() of a short line on an O_APPEND file is atomic between processes.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@app.task
def add(x, y):
    return x + y


@app.task
def fail(message):
    raise ValueError(message)


@app.task
def echo(value):
    return value


@app.task
def unserializable_result():
    return object()


@app.task
def record(path: str, token: str, seconds: float = 0.0) -> int:
    """Note 'start', sleep, note 'done': the file shows what ran where and when."""
    append_line(path, f"start {token} {os.getpid()} {time.time():.6f}")
    if seconds:
        time.sleep(seconds)
    append_line(path, f"done {token} {os.getpid()} {time.time():.6f}")
    return os.getpid()


@app.task(ignore_result=True)
def record_quietly(path: str, token: str) -> None:
    append_line(path, f"done {token} {os.getpid()} {time.time():.6f}")
