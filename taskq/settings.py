"""Every default taskq uses and every ``TASKQ_*`` environment variable it reads, one line of doc each.

Other modules import their defaults from here, so a default is written once and this file
is the list to read; docs/configuration.md explains each, and
tests/unit/test_configuration_doc.py checks the two agree. Values are plain constants: an app
changes them through ``App(...)``, an option or a variable, never by assigning here.
Timings that follow from one module's own mechanism (the embedded broker's SQLite pauses,
a reader's poll slice) stay beside that code, with the reason.
"""

from __future__ import annotations

# -- environment variables (names) ------------------------------------------------------

#: The broker URL when ``App`` has no ``broker=``; also ``--broker`` of every command.
BROKER_URL_ENV = "TASKQ_BROKER_URL"
#: The folder of the embedded broker's ``broker.db``.
HOME_ENV = "TASKQ_HOME"
#: The ``-A MODULE:APP`` of every command.
APP_ENV = "TASKQ_APP"
#: The secret every request to ``taskq dashboard`` must carry (its ``--token``).
DASHBOARD_TOKEN_ENV = "TASKQ_DASHBOARD_TOKEN"
#: Seconds between a worker child's ``worker.heartbeat`` events (read by taskq/events.py).
HEARTBEAT_INTERVAL_ENV = "TASKQ_HEARTBEAT_INTERVAL"
#: ``off``: no log records and no task events leave the worker (read by taskq/events.py).
BROADCAST_ENV = "TASKQ_BROADCAST"
#: Seconds between a busy child's flushes of log records and events (read by taskq/events.py).
BROADCAST_INTERVAL_ENV = "TASKQ_BROADCAST_INTERVAL"
#: Most records in one broadcast message (read by taskq/events.py).
BROADCAST_BATCH_ENV = "TASKQ_BROADCAST_BATCH"

# -- the app ----------------------------------------------------------------------------

#: ``App(name)``: shown in the banner, carried by every log record, the default event group.
APP_NAME = "taskq"
#: ``App(default_queue=)``: the queue of tasks declared without ``queue=``.
DEFAULT_QUEUE = "default"
#: ``App(heartbeat=)``: AMQP heartbeat, in seconds, of the worker children's connections.
HEARTBEAT = 30.0
#: ``App(queue_type=)``: ``classic`` or ``quorum``.
QUEUE_TYPE = "classic"
#: Without ``$TASKQ_HOME``: the embedded broker's folder, relative to the working folder.
HOME = ".taskq"

# -- publishing (taskq.broker.RetryPolicy) ----------------------------------------------

#: Attempts after the first that one send may make through an outage.
PUBLISH_MAX_RETRIES = 6
#: Seconds before the second attempt; doubles per attempt (jittered, taskq.backoff).
PUBLISH_INTERVAL_START = 0.2
#: Seconds: the cap of that pause.
PUBLISH_INTERVAL_MAX = 3.0
#: Seconds one send may take, all of its attempts and pauses together.
PUBLISH_DEADLINE = 10.0
#: Seconds for one attempt's TCP connect and AMQP handshake.
PUBLISH_CONNECT_TIMEOUT = 4.0
#: Seconds to wait for the broker's confirm of one publish.
PUBLISH_CONFIRM_TIMEOUT = 10.0
#: Seconds a publish waits for a free pooled connection, within its budget.
PUBLISH_POOL_WAIT = 30.0
#: Unconfirmed messages a bulk publish (``send_many``) lets in flight before it waits.
PUBLISH_CONFIRM_WINDOW = 1000

# -- what a dead letter keeps (taskq.copies) ---------------------------------------------

#: Characters of a failure's traceback kept (the end): AMQP headers must fit one frame.
DEAD_LETTER_MAX_TRACEBACK = 8000
#: Characters of a failure's exception message, or a rejection's detail, kept.
DEAD_LETTER_MAX_MESSAGE = 2000

# -- delays (taskq.delay) ----------------------------------------------------------------

#: Seconds a message may arrive before its eta (clock skew) and still run, not re-delayed.
ETA_EARLY_TOLERANCE = 1.0

# -- the embedded broker ------------------------------------------------------------------

#: Seconds the embedded broker retries a database locked by other processes, then BrokerBusyError.
EMBEDDED_GIVE_UP_AFTER = 60.0

# -- the worker (taskq.worker) -----------------------------------------------------------

#: Seconds an idle worker child waits for a message before it looks at its stop flag and heartbeats.
WORKER_TICK = 1.0
#: Refused logins or vhosts in a row after which a child stops the worker instead of reconnecting.
WORKER_REFUSED_ATTEMPTS = 3
#: Seconds: a child that died younger than this is replaced only after this pause (no fork loop).
WORKER_RESTART_PAUSE = 1.0

# -- revocation (taskq.revocation, docs/revoke.md) ------------------------------------------

#: Seconds a revocation is kept (the RabbitMQ stream's x-max-age, each child's memory): a task
#: revoked longer ago than this runs if it is still queued. Every side must agree on it.
REVOKE_WINDOW = 86400.0
#: Revoked ids one worker child remembers at most; past it the oldest are forgotten first.
REVOKE_CAPACITY = 100_000
#: Revocations a child reads from the stream ahead of acking them (streams need a prefetch).
REVOKE_PREFETCH = 1000
#: Seconds a connecting child waits to have read the stream's backlog before it consumes tasks anyway.
REVOKE_CATCH_UP = 10.0

# -- the scheduler (taskq.scheduler) -----------------------------------------------------

#: Seconds: AMQP heartbeat of a scheduler's lease connection. A leader whose machine died
#: (no closed socket) loses its lease after two missed beats; a killed process, at once.
SCHEDULER_HEARTBEAT = 2.0
#: Seconds between a follower's tries at the lease: with a killed leader, the takeover time.
SCHEDULER_LEASE_POLL = 0.5
#: Seconds a leader waits at most between looks at its schedules (and its connection).
SCHEDULER_TICK = 0.25

# -- broadcasting from a worker child (taskq.events; each has a TASKQ_* variable) ----------

#: Seconds between a child's ``worker.heartbeat`` events (``$TASKQ_HEARTBEAT_INTERVAL``).
WORKER_HEARTBEAT_INTERVAL = 2.0
#: Seconds between a busy child's flushes of log records and events (``$TASKQ_BROADCAST_INTERVAL``).
BROADCAST_INTERVAL = 0.1
#: Most records in one broadcast message (``$TASKQ_BROADCAST_BATCH``).
BROADCAST_BATCH = 500
#: Records a child holds while nobody listens or the broker is away; then the newest are dropped (counted).
BROADCAST_CAPACITY = 10_000

# -- retrying a failed task (taskq.middleware.retries.RetryRules; @app.task's own defaults match) -----

#: Seconds before the first retry; doubles per retry.
RETRY_BACKOFF = 1.0
#: Seconds: the cap of that wait.
RETRY_BACKOFF_MAX = 600.0
#: Whether each wait is jittered (equal jitter, taskq.backoff).
RETRY_JITTER = True
#: How often ``raise Retry()`` may repeat when neither it nor the task set a limit.
EXPLICIT_RETRY_LIMIT = 3

# -- reconnecting -----------------------------------------------------------------------

#: Seconds a listener, the dashboard or a worker child waits before its first reconnect.
RECONNECT_BACKOFF_FIRST = 0.5
#: Seconds: the cap of that wait, which doubles per failed try (jittered, taskq.backoff).
RECONNECT_BACKOFF_MAX = 10.0
#: Seconds: AMQP heartbeat of a listener's or the dashboard's connections, and of the reply listener's.
LISTENER_HEARTBEAT = 30.0

# -- asyncio (taskq/aio.py) -------------------------------------------------------------

#: Threads that publish (and wait for confirms) for ``adelay``/``aapply_async`` in one process.
ASYNC_SENDER_THREADS = 4

# -- listeners: taskq logs, events, status (taskq.subscriber) ----------------------------

#: Messages the broker holds for a listener that falls behind (``--max-length``); then it drops the oldest.
LISTENER_MAX_LENGTH = 10_000
#: Unacked messages a listener holds besides its queue (acked one by one).
LISTENER_PREFETCH = 100
#: Seconds ``taskq status`` listens for worker heartbeats (``--wait``): two heartbeat intervals and some.
STATUS_WAIT = 4.5
#: Seconds ``taskq call --wait`` waits for the result (``--timeout``).
CALL_TIMEOUT = 60.0
#: Dead letters ``taskq dead list`` shows at most (``--limit``).
DEAD_LIST_LIMIT = 100

# -- the dashboard ----------------------------------------------------------------------

#: ``taskq dashboard --host``: loopback, as a page that can purge queues needs a token beyond it.
DASHBOARD_HOST = "127.0.0.1"
#: ``taskq dashboard --port``.
DASHBOARD_PORT = 8000
#: Seconds between the dashboard's queue counts.
DASHBOARD_REFRESH_INTERVAL = 1.0
#: Dead letters the page shows per queue, the newest (``taskq dead list`` has them all).
DASHBOARD_DEAD_LETTERS_SHOWN = 50
#: Log lines the page keeps and shows.
DASHBOARD_LOG_LINES_KEPT = 500
#: Seconds of one bar of the throughput chart.
DASHBOARD_BUCKET_SECONDS = 5
#: Bars of the throughput chart (72 of 5 s: six minutes).
DASHBOARD_BUCKETS = 72
#: Seconds the page waits for a replay or purge it asked for.
DASHBOARD_ACTION_TIMEOUT = 60.0
#: Characters of a failure's arguments sent to the page.
DASHBOARD_LONGEST_ARGS = 300
#: Characters of one log field sent to the page.
DASHBOARD_LONGEST_VALUE = 4000
#: After a read of a ``.dead`` queue that took d seconds, it is not read again for this many times d.
DASHBOARD_SCAN_PAUSE = 9
#: Updates a slow browser may fall behind by before it is dropped (it reconnects).
DASHBOARD_CLIENT_BACKLOG = 64
#: Seconds the page's updates are gathered into one push: a busy cluster's log lines become a few.
DASHBOARD_COALESCE = 0.25
#: Seconds between keepalives on an idle stream to the page.
DASHBOARD_KEEPALIVE = 15.0

# -- the state store (App(results=...), docs/results.md) -----------------------------

#: Seconds a task's record (state, result, timeline) is kept after its last change.
RESULT_RETENTION_ENV = "TASKQ_RESULT_RETENTION"
#: One day: long enough for "what did last night's job return", short enough to bound the store.
RESULT_RETENTION = 86400.0

#: Attempts a worker makes at one state write before it gives up on the store for that message.
STATE_WRITE_ATTEMPTS = 5
#: Seconds before the second attempt; doubles per attempt (jittered, taskq.backoff).
STATE_WRITE_BACKOFF_FIRST = 0.2
#: Seconds: the cap of that pause. With 5 attempts the worker waits at most ~3 s in all, well
#: inside the AMQP heartbeat (30 s), which nothing serves while the child waits.
STATE_WRITE_BACKOFF_MAX = 2.0
#: Seconds one network call to a Redis store may take (connecting, then each command).
STATE_REDIS_TIMEOUT = 2.0
#: Seconds a SQLite store waits for a lock another process holds.
STATE_SQLITE_BUSY_TIMEOUT = 5.0

#: Seconds between ``StoredResult.get()``'s first two reads of the store; doubles up to the next.
RESULT_GET_POLL_FIRST = 0.02
#: Seconds: the longest pause between two of its reads.
RESULT_GET_POLL_MAX = 0.5

#: Most timeline entries kept per task (the latest): a task redelivered or retried without end
#: must not grow its record without bound.
STATE_TIMELINE_LIMIT = 100

#: Seconds: a reserved rate-limit slot this close to now runs now rather than taking a trip
#: through the delay cascade (a trip costs more than the wait it saves).
RATE_LIMIT_TOLERANCE = 0.005
#: Seconds: a re-delayed message starting later than this after its rate-limit slot (it waited
#: behind a backlog in the work queue) takes a new slot instead of starting in a bunch.
RATE_LIMIT_MAX_LATENESS = 0.25
