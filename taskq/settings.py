"""Every default taskq uses and every ``TASKQ_*`` environment variable it reads, one line of doc each.

Other modules import their defaults from here, so a default is written once and this file
is the list to read (docs/configuration.md explains each; tests/test_configuration_doc.py
checks the two agree).
"""

from __future__ import annotations

# -- reconnecting -----------------------------------------------------------------------

#: Seconds a listener, the dashboard or a worker child waits before its first reconnect.
RECONNECT_BACKOFF_FIRST = 0.5
#: Seconds: the cap of that wait, which doubles per failed try (jittered, taskq.backoff).
RECONNECT_BACKOFF_MAX = 10.0
