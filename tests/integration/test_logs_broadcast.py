"""Worker log records over the taskq.logs fanout, read by real ``taskq logs`` subprocesses."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from taskq import TaskError, topology
from taskq.subscriber import Subscription, records
from tests.support.cli_helpers import FAST_HEARTBEATS, rabbitmqctl_queues, delete_prefixed_entities, evapp, listeners  # noqa: F401 (fixtures)
from tests.support.event_apps import add, boom, chatty, fails_twice
from tests.support.tcp_proxy import Proxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.broker
APP = "tests.support.event_apps:app"


def summary(stderr: str) -> tuple[int, int]:
    received, missed = re.search(r"received (\d+) lines, missed (\d+)", stderr).groups()
    return int(received), int(missed)


@contextlib.contextmanager
def listening(broker, exchange, binding_keys: list[str], into: list[dict]) -> Iterator[None]:
    """A ``Subscription`` in a thread, bound when entered, collecting every record into ``into``."""
    stop, ready = threading.Event(), threading.Event()
    subscription = Subscription(broker, exchange, binding_keys)
    thread = threading.Thread(
        target=subscription.run, args=(lambda message: into.extend(records(message)),),
        kwargs={"should_stop": stop.is_set, "on_ready": lambda queue: ready.set()}, daemon=True,
    )
    thread.start()
    try:
        assert ready.wait(10)
        yield
    finally:
        stop.set()
        thread.join(10)


def test_every_subscriber_gets_every_line_with_the_task_context(evapp, queue_name, start_worker, listeners, tmp_path):
    # Listeners first: a worker that finds nobody bound stops sending for a second, and the
    # listener that binds then misses the lines around its probe (events.md).
    log_file = tmp_path / "worker-lines.jsonl"
    log_file.write_text("")  # --output appends
    to_file = listeners("logs", "-A", APP, "--json", "--output", str(log_file), name="to-file")
    to_screen = listeners("logs", "-A", APP, "--json", name="to-screen")
    warnings = listeners("logs", "-A", APP, "--json", "--level", "warning", "--task", chatty.name, name="warnings")
    worker = start_worker([queue_name], 1, app=APP, extra_env=FAST_HEARTBEATS)
    tag = uuid.uuid4().hex
    assert chatty.apply_async((30, tag), queue=queue_name).get(timeout=20) == 30
    assert chatty.apply_async((3, tag, "warning"), queue=queue_name).get(timeout=20) == 3
    with pytest.raises(TaskError):
        boom.apply_async(("kaput",), queue=queue_name).get(timeout=20)

    def read_file():
        return to_file.json_lines(log_file.read_text())

    def has_failure(lines):
        return any(line["event"] == "task failed" and line["task"] == boom.name for line in lines)

    wait_until(lambda: has_failure(read_file()) and has_failure(to_screen.json_lines()), what="the failure line everywhere")
    wait_until(lambda: len(warnings.json_lines()) >= 3, what="three warnings")
    for listener in (to_file, to_screen, warnings):
        assert summary(listener.stop())[1] == 0

    # The worker's start-up lines may come before one listener was bound: compare task lines.
    file_lines = [line for line in read_file() if "task_id" in line]
    screen_lines = [line for line in to_screen.json_lines() if "task_id" in line]
    assert file_lines == screen_lines  # the same lines, in the same order
    [child_pid] = worker.child_pids()
    chatty_lines = [line for line in file_lines if line.get("tag") == tag]
    assert [(line["level"], line["index"]) for line in chatty_lines] == [("info", i) for i in range(30)] + [("warning", i) for i in range(3)]
    for line in chatty_lines:
        assert line["task"] == chatty.name and line["queue"] == queue_name and line["attempt"] == 1
        assert line["pid"] == child_pid and line["app"] == "evtests" and isinstance(line["seq"], int)
    seqs = [line["seq"] for line in file_lines if line["pid"] == child_pid]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # nothing lost on the way

    succeeded = [line for line in file_lines if line["event"] == "task succeeded" and line["task"] == chatty.name]
    assert len(succeeded) == 2 and all(line["runtime"] >= 0 and line["pid"] == child_pid for line in succeeded)
    [failed] = [line for line in file_lines if line["event"] == "task failed"]
    assert failed["exc_type"] == "ValueError" and failed["exc_message"] == "kaput" and failed["task_id"]

    assert [(line["level"], line["index"]) for line in warnings.json_lines()] == [("warning", i) for i in range(3)]


def test_a_slow_subscriber_loses_the_oldest_lines_and_reports_how_many(evapp, queue_name, start_worker, listeners):
    # One line per message, so the listener's x-max-length of 5 counts lines.
    keeping_up = listeners("logs", "-A", APP, "--json", name="keeping-up")  # bound before the worker starts
    slow = listeners("logs", "-A", APP, "--json", "--max-length", "5", name="slow")
    worker = start_worker([queue_name], 1, app=APP, extra_env={**FAST_HEARTBEATS, "TASKQ_BROADCAST_BATCH": "1"})
    [child_pid] = worker.child_pids()
    slow.process.send_signal(signal.SIGSTOP)

    def finished(listener, task_id):
        return any(line["event"] == "task succeeded" and line.get("task_id") == task_id for line in listener.json_lines())

    try:
        result = chatty.apply_async((300, uuid.uuid4().hex), queue=queue_name)
        result.get(timeout=30)
        # The fanout enqueues every line in both queues at once: when the listener that keeps
        # up has the last line, the stopped one's queue has had all of them.
        wait_until(lambda: finished(keeping_up, result.id), what="the last line")
        # x-max-length: the broker kept only the newest (an exclusive queue: only rabbitmqctl may look)
        assert rabbitmqctl_queues()[slow.queue_name][0] == 5
    finally:
        slow.process.send_signal(signal.SIGCONT)
    wait_until(lambda: finished(slow, result.id), what="slow catching up")
    received, missed = summary(slow.stop())
    ours = [line for line in slow.json_lines() if line["pid"] == child_pid]
    span = ours[-1]["seq"] - ours[0]["seq"] + 1
    reported = sum(int(n) for n in re.findall(rf"missed (\d+) lines from \S+ pid {child_pid}\b", slow.stderr()))
    assert reported == span - len(ours)  # every line of the span is either printed or counted
    assert reported >= 300 - 100 - 5  # at most its prefetch plus its queue survived
    assert received >= len(ours) and missed >= reported
    assert summary(keeping_up.stop())[1] == 0


def test_a_follower_outlives_a_broker_outage_and_counts_the_lines_it_missed(
    evapp, queue_name, start_worker, listeners, broker_url
):
    proxy = Proxy(broker_url)  # the follower's way to the broker, to cut and restore
    proxy.start()
    try:
        follower = listeners("logs", "-A", APP, "--json", "--broker", proxy.url, name="follower")
        # A second listener, straight to the broker: it shows when the worker has sent a
        # line (a worker sends its lines up to a second after they were logged, events.md),
        # and keeps the worker from ever finding nobody bound.
        witness = listeners("logs", "-A", APP, "--json", name="witness")
        start_worker([queue_name], 1, app=APP, extra_env={"TASKQ_BROADCAST_BATCH": "1"})
        before, during, after = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex

        def printed(listener, tag: str) -> int:
            return sum(line.get("tag") == tag for line in listener.json_lines())

        assert chatty.apply_async((3, before), queue=queue_name).get(timeout=20) == 3
        wait_until(lambda: printed(follower, before) == 3, what="the lines before the outage")

        proxy.stop()
        wait_until(lambda: "lost the broker" in follower.stderr(), what="the follower noticing")
        assert chatty.apply_async((5, during), queue=queue_name).get(timeout=20) == 5
        wait_until(lambda: printed(witness, during) == 5, what="the worker sending the outage's lines")
        proxy.start()
        wait_until(lambda: "listening again" in follower.stderr(), what="the follower reconnecting")
        assert chatty.apply_async((1, after), queue=queue_name).get(timeout=20) == 1
        wait_until(lambda: printed(follower, after) == 1, what="lines reaching the follower again")

        assert follower.process.poll() is None
        assert printed(follower, during) == 0
        _, missed = summary(follower.stop())
        assert missed >= 5  # at least the outage's five lines, found by their sequence numbers
    finally:
        proxy.stop()


def test_children_sharing_stderr_never_split_a_json_line(evapp, queue_name, start_worker):
    worker = start_worker([queue_name], 2, app=APP)
    tag = uuid.uuid4().hex
    results = [chatty.apply_async((400, tag), queue=queue_name) for _ in range(4)]
    assert [result.get(timeout=60) for result in results] == [400] * 4
    worker.stop()
    records = [line for line in worker.log().splitlines() if line.startswith("{") or not line.strip()]
    assert all(line.strip() for line in records), "a blank line: two records were interleaved"
    parsed = [json.loads(line) for line in records]
    assert sum(record.get("tag") == tag for record in parsed) == 1600


def test_lifecycle_events_follow_a_task_through_retry_and_dead_letter(evapp, queue_name, start_worker):
    start_worker([queue_name], 1, app=APP)
    seen: list[dict] = []
    with listening(evapp.broker, topology.lifecycle_exchange(), ["task.#"], seen):
        succeeding = add.apply_async((2, 3), queue=queue_name)
        assert succeeding.get(timeout=20) == 5
        failing = fails_twice.apply_async(("twice",), queue=queue_name)
        with pytest.raises(TaskError):
            failing.get(timeout=30)
        wait_until(lambda: any(e["event"] == "task.dead_lettered" and e["task_id"] == failing.id for e in seen),
                   what="the dead-letter event")
        wait_until(lambda: any(e["event"] == "task.succeeded" and e["task_id"] == succeeding.id for e in seen),
                   what="the success event")

    def kinds(task_id):  # batched per kind, so compare as multisets
        return Counter(e["event"] for e in seen if e.get("task_id") == task_id)

    assert kinds(succeeding.id) == Counter({"task.received": 1, "task.started": 1, "task.succeeded": 1})
    assert kinds(failing.id) == Counter(
        {"task.received": 2, "task.started": 2, "task.failed": 2, "task.retried": 1, "task.dead_lettered": 1}
    )
    # The lifecycle exchange is one per vhost: other workers' events (another test's, another
    # checkout's on a shared broker) reach this listener too, so look at this test's tasks only.
    ours = [e for e in seen if e.get("task_id") in (succeeding.id, failing.id)]
    [done] = [e for e in ours if e["event"] == "task.succeeded"]
    assert done["runtime"] >= 0 and done["queue"] == queue_name and done["task"] == add.name and done["app"] == "evtests"
    failures = sorted((e["attempt"], e["exc_type"], e["exc_message"]) for e in ours if e["event"] == "task.failed")
    assert failures == [(1, "ValueError", "twice"), (2, "ValueError", "twice")]
    [retried] = [e for e in ours if e["event"] == "task.retried"]
    assert retried["attempt"] == 1 and retried["delay"] == pytest.approx(0.05) and retried["exc_type"] == "ValueError"
    [dead] = [e for e in ours if e["event"] == "task.dead_lettered"]
    assert dead["reason"] == "retries-exhausted" and dead["dead_letter_queue"] == queue_name + ".dead"
    assert dead["task"] == fails_twice.name


def test_unheard_events_are_not_sent_until_a_listener_binds(evapp, queue_name, start_worker):
    """Batches are mandatory: RabbitMQ returns the ones nobody is bound for, and the worker
    stops encoding that kind for a second (counted as ``unheard`` in its heartbeats); a
    listener that binds gets the kind again within about that second."""
    start_worker([queue_name], 1, app=APP)
    heartbeats: list[dict] = []
    tasks: list[dict] = []
    with listening(evapp.broker, topology.lifecycle_exchange(), ["worker.heartbeat"], heartbeats):
        def unheard_counted() -> bool:
            assert add.apply_async((1, 1), queue=queue_name).get(timeout=10) == 2
            return any(beat.get("unheard", 0) > 0 for beat in heartbeats)

        wait_until(unheard_counted, timeout=30, what="a heartbeat counting unheard task events")
        with listening(evapp.broker, topology.lifecycle_exchange(), ["task.succeeded"], tasks):
            sent: set[str] = set()

            def heard_again() -> bool:
                # Any task sent since the listener bound will do: an event is flushed up to
                # 0.1 s after its task's result arrived.
                result = add.apply_async((2, 2), queue=queue_name)
                sent.add(result.id)
                assert result.get(timeout=10) == 4
                return any(event["task_id"] in sent for event in tasks)

            wait_until(heard_again, timeout=10, what="task.succeeded reaching the new listener")


def test_a_listener_bound_while_lines_are_unheard_gets_every_line_logged_after(evapp, queue_name, start_worker, listeners):
    """A worker whose log lines nobody heard holds them back rather than sending them to
    nobody; a ``taskq logs`` that binds then gets every line logged from then on (events.md)."""
    worker = start_worker([queue_name], 1, app=APP, extra_env=FAST_HEARTBEATS)
    [child_pid] = worker.child_pids()
    heartbeats: list[dict] = []
    # Bound to every lifecycle event, so the task events are heard and a heartbeat's
    # ``unheard`` can only count this child's log lines.
    with listening(evapp.broker, topology.lifecycle_exchange(), ["#"], heartbeats):
        def lines_unheard() -> bool:
            assert chatty.apply_async((1, "unheard"), queue=queue_name).get(timeout=20) == 1
            return any(beat.get("event") == "worker.heartbeat" and beat.get("pid") == child_pid
                       and beat.get("unheard", 0) > 0 for beat in heartbeats)

        # Another session's `taskq logs` on this broker would keep the lines heard: wait long.
        wait_until(lines_unheard, timeout=120, what="a heartbeat counting this child's unheard log lines")
        follower = listeners("logs", "-A", APP, "--json", name="follower")
        tag, count = uuid.uuid4().hex, 40
        results = [chatty.apply_async((1, tag), queue=queue_name) for _ in range(count)]
        assert [result.get(timeout=30) for result in results] == [1] * count

        def ours() -> list[dict]:
            return [line for line in follower.json_lines() if line.get("tag") == tag]

        try:
            wait_until(lambda: len(ours()) == count, timeout=30, what=f"all {count} lines at the new listener")
        finally:
            received, missed = len(ours()), summary(follower.stop())[1]
            reported = sum(int(n) for n in re.findall(rf"missed (\d+) lines from \S+ pid {child_pid}\b", follower.stderr()))
            print(f"received {received} of {count} lines; missed {missed} in all, {reported} from the child")
        assert reported == 0
