"""The operator commands as an operator runs them: subprocesses against the real broker."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from tests.support import ROOT
from tests.support.brokers import queue_state
from tests.support.cli_helpers import FAST_HEARTBEATS, delete_prefixed_entities, evapp, rabbitmqctl_queues, taskq  # noqa: F401
from tests.support.event_apps import noop, sleepy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.broker
APP = "tests.support.event_apps:app"


def status_process(broker_url: str, queue: str, counts: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "taskq", "status", "-A", APP, "-Q", queue, "--wait", "2", "--counts", counts, "--json", "--broker", broker_url],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_status_agrees_with_rabbitmqctl_then_purge_empties_the_queue(evapp, amqp, broker_url, queue_name, start_worker):
    worker = start_worker([queue_name], 1, app=APP, extra_env=FAST_HEARTBEATS)
    sleepy.apply_async((12,), queue=queue_name)
    for _ in range(3):
        noop.apply_async((), queue=queue_name)
    wait_until(lambda: rabbitmqctl_queues().get(queue_name, (0, 0, 0))[:2] == (3, 1), what="1 running, 3 waiting")
    processes = {counts: status_process(broker_url, queue_name, counts) for counts in ("rabbitmqctl", "amqp")}
    reports = {}
    for counts, process in processes.items():
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        reports[counts] = json.loads(out)
    truth = rabbitmqctl_queues()
    for counts, report in reports.items():
        assert report["counts_from"].startswith(counts)
        numbers = {q["name"]: (q["ready"], q["unacked"], q["consumers"]) for q in report["queues"]}
        assert numbers == {queue_name: truth[queue_name], queue_name + ".dead": truth[queue_name + ".dead"]}, counts
        assert numbers[queue_name] == (3, 1, 1)
        [child] = [w for w in report["workers"] if w["queues"] == [queue_name]]
        assert child["pid"] == worker.child_pids()[0] and child["ppid"] == worker.pid and child["concurrency"] == 1
        assert child["current"]["task"] == sleepy.name and child["current"]["queue"] == queue_name
        assert child["done"] == 0 and child["queues"] == [queue_name]

    refused = taskq("purge", queue_name, broker_url=broker_url, input="n\n")
    assert refused.returncode == 1 and queue_state(amqp, queue_name)[0] == 3
    purged = taskq("purge", queue_name, "--yes", broker_url=broker_url)
    assert purged.returncode == 0 and purged.stdout.strip() == f"purged 3 messages from {queue_name}"
    assert queue_state(amqp, queue_name)[0] == 0
    assert rabbitmqctl_queues()[queue_name][1] == 1  # the running task is not touched


def test_status_reads_the_app_queues_and_human_output(evapp, broker_url, start_worker):
    worker = start_worker([evapp.default_queue], 2, app=APP, extra_env=FAST_HEARTBEATS)
    result = taskq("status", "-A", APP, "--wait", "1.5", broker_url=broker_url)
    assert result.returncode == 0, result.stderr
    assert evapp.default_queue in result.stdout and evapp.default_queue + ".dead" in result.stdout
    ours = [line for line in result.stdout.splitlines() if f"(worker {worker.pid}, concurrency 2): idle" in line]
    assert sorted(int(line.split(" pid ")[1].split()[0]) for line in ours) == sorted(worker.child_pids())


def test_call_sends_a_task_and_waits_for_its_result(evapp, broker_url, queue_name, start_worker):
    start_worker([queue_name], 1, app=APP)
    result = taskq("call", "tests.support.event_apps.add", "-A", APP, "--args", "[2, 3]", "--queue", queue_name, "--wait", broker_url=broker_url)
    assert (result.returncode, result.stdout.strip()) == (0, "5"), result.stderr
    result = taskq("call", "tests.support.event_apps.add", "-A", APP, "--kwargs", '{"x": 1, "y": 1}', "--queue", queue_name, "--wait", broker_url=broker_url)
    assert result.stdout.strip() == "2"
    failed = taskq("call", "tests.support.event_apps.boom", "-A", APP, "--args", '["no"]', "--queue", queue_name, "--wait", broker_url=broker_url)
    assert failed.returncode == 1 and "ValueError: no" in failed.stderr
    sent = taskq("call", "tests.support.event_apps.noop", "-A", APP, "--queue", queue_name, broker_url=broker_url)
    assert sent.returncode == 0 and str(uuid.UUID(sent.stdout.strip())) == sent.stdout.strip()


@pytest.mark.parametrize(
    "args, message",
    [
        (["stauts"], "No such command 'stauts'"),
        (["logs", "--level", "loud"], "Invalid value for '--level'"),
        (["logs", "--lvel", "info"], "No such option '--lvel'"),
        (["status", "-A", "tests.no_such_module:app"], "no module named 'tests.no_such_module'"),
        (["call", "tests.support.event_apps.nope", "-A", APP], "no task named 'tests.support.event_apps.nope'"),
        (["call", "tests.support.event_apps.add", "-A", APP, "--args", "{not json"], "--args: not JSON"),
        (["call", "tests.support.event_apps.add", "-A", APP, "--args", '{"x": 1}'], "--args: expected a JSON array"),
        (["purge", "taskq-no-such-queue-" + uuid.uuid4().hex, "--yes"], "no queue named"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(broker_url, args, message):
    result = taskq(*args, broker_url=broker_url)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr and result.stderr.startswith("Error: ")


@pytest.mark.parametrize("command", ["logs", "events"])
def test_a_listener_that_cannot_reach_the_broker_at_the_start_says_so_in_one_line(command):
    # Port 1: nothing listens there. A follower keeps going through an outage
    # (test_logs_broadcast), but a broker it never reached is most likely a wrong URL.
    result = taskq(command, "--broker", "amqp://guest:secret@127.0.0.1:1//", broker_url="amqp://unused//")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: broker at amqp://guest:**@127.0.0.1:1//: "), result.stderr
    assert "secret" not in result.stderr


def test_every_command_has_help(broker_url):
    from taskq.cli import main

    for name in main.commands:
        result = taskq(name, "--help", broker_url=broker_url)
        assert result.returncode == 0 and result.stdout.startswith("Usage:"), name
