"""AMQP topic matching, as RabbitMQ does it: one function for every side that needs it.

The app's event dispatch (``taskq.routing``) picks the handlers of an arriving event by
topic, and the embedded broker routes through topic exchanges by the same rule; one
implementation keeps them from ever disagreeing with each other, or with RabbitMQ.
"""

from __future__ import annotations

import functools
import re


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """AMQP topic match: words split on dots, ``*`` is exactly one word, ``#`` zero or more.

    kombu's own regex turns ``lazy.#`` into one-or-more, so ``lazy`` would not match;
    RabbitMQ matches it, and code tested here must behave the same there.
    """
    return _topic_pattern(binding_key).match("." + routing_key) is not None


@functools.lru_cache(maxsize=4096)
def _topic_pattern(binding_key: str) -> re.Pattern[str]:
    """Compiled once per binding key: the delay cascade matches 33-word keys at every level.

    Matched against the routing key with a dot in front, so every word, ``#``'s too,
    is "a dot and a word" and ``#`` can stand for none of them.
    """
    words = {"*": r"\.[^.]*", "#": r"(?:\.[^.]*)*"}
    return re.compile("".join(words.get(word) or r"\." + re.escape(word) for word in binding_key.split(".")) + r"\Z")
