"""What a caller's type checker sees; tests/unit/test_typing.py runs mypy on it, nothing runs it.

A line ending in ``# expect: error [code]`` must get that mypy error, one ending in
``# expect: reveal TYPE`` must get that revealed type (builtins unqualified), several are
separated by ``;``, and no other line may get anything.
"""

from __future__ import annotations

from taskq import App

app = App("typing")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(queue="greetings", max_retries=3)
def greet(name: str, *, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation}"


add.delay("x")  # expect: error [call-arg]; error [arg-type]
add.delay("x", 2)  # expect: error [arg-type]
add.delay(1)  # expect: error [call-arg]
add.delay(1, 2, 3)  # expect: error [call-arg]
reveal_type(add.delay(1, 2).get())  # expect: reveal int
reveal_type(add.delay(1, y=2).get(timeout=10))  # expect: reveal int
reveal_type(add(1, 2))  # expect: reveal int
reveal_type(add.apply_async((1, 2), queue="other").get())  # expect: reveal int
reveal_type(add.map([(1, 2), (3, 4)])[0].get())  # expect: reveal int

greet.delay(1)  # expect: error [arg-type]
greet.delay("ann", punctuation=1)  # expect: error [arg-type]
reveal_type(greet.delay("ann", punctuation="?").get())  # expect: reveal str
reveal_type(greet("ann"))  # expect: reveal str
