"""Quorum queues: the options that can't go with them are refused when the App is made
(declaring them, and poison messages on them, are in tests/integration/test_quorum.py)."""

from __future__ import annotations

import pytest

from taskq import App, ConfigurationError


def test_quorum_options_are_checked():
    with pytest.raises(ConfigurationError, match="priorities"):
        App("q", queue_type="quorum", max_priority=5)
    with pytest.raises(ConfigurationError, match="delivery_limit needs"):
        App("q", delivery_limit=3)
    with pytest.raises(ConfigurationError, match="queue_type"):
        App("q", queue_type="stream")
