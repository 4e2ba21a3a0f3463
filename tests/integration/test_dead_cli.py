"""``taskq dead list|replay|purge`` against the real broker, in-process through click (and
through the real command where what an operator sees is the point)."""

from __future__ import annotations

import uuid

import pytest
from click.testing import CliRunner

from taskq.cli import main
from taskq.errors import TaskError
from taskq.message import TaskMessage
from tests.support.brokers import queue_state
from tests.support.cli_helpers import taskq
from tests.support.reliability_fixtures import rapp  # noqa: F401  (a fixture)
from tests.support.waiting import wait_until


def run(broker_url: str, *args: str):
    return CliRunner().invoke(main, ["dead", *args, "--broker", broker_url], catch_exceptions=False)


@pytest.fixture
def dead_queue(rapp, queue_name, amqp):
    """``queue_name.dead`` holding three unknown-task messages, put there the way a worker would."""
    from taskq import copies, topology

    ids = [f"dead-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    rapp.send(TaskMessage(id="declare", task="x"), queue=queue_name, want_result=False)  # declares both queues
    amqp.channel().queue_purge(queue_name)
    for task_id in ids:
        message = TaskMessage(id=task_id, task="no.such.task", args=(task_id,))
        headers = copies.dead_letter_headers(message.headers(), reason="unknown-task", detail="no such task", queue=queue_name)
        rapp.broker.publish(message.body(), routing_key=topology.dead_letter_queue_name(queue_name), headers=headers)
    return ids


@pytest.mark.both_brokers
def test_list_shows_messages_in_order_and_leaves_them(broker_url, queue_name, dead_queue, amqp):
    first = run(broker_url, "list", queue_name)
    second = run(broker_url, "list", queue_name)
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert [line.split()[0] for line in lines] == dead_queue  # oldest first
    assert "reason=unknown-task" in lines[0] and f"from={queue_name}" in lines[0]
    assert second.stdout == first.stdout  # not lost, not reordered
    assert queue_state(amqp, queue_name + ".dead")[0] == 3
    limited = run(broker_url, "list", queue_name, "--limit", "1")
    assert len(limited.stdout.splitlines()) == 1 and "1 of 3" in limited.stderr
    assert run(broker_url, "list", queue_name, "--traceback").stdout == first.stdout  # these never ran: none


def test_list_with_traceback_shows_where_the_failed_task_raised(rapp, broker_url, queue_name, start_worker, tmp_path, amqp):
    from tests.support.apps_reliability import always_fails

    start_worker([queue_name], app="tests.support.apps_reliability:app")
    with pytest.raises(TaskError):
        always_fails.apply_async((str(tmp_path / "attempts"), "KeyError"), queue=queue_name).get(timeout=30)
    wait_until(lambda: queue_state(amqp, queue_name + ".dead")[0] == 1, what="a dead letter")
    plain = taskq("dead", "list", queue_name, broker_url=broker_url)
    shown = taskq("dead", "list", queue_name, "--traceback", broker_url=broker_url)
    assert shown.returncode == 0, shown.stderr
    letter, *traceback = shown.stdout.splitlines()
    assert letter == plain.stdout.strip() and "KeyError" in letter
    assert traceback[0] == "    Traceback (most recent call last):", shown.stdout
    assert all(line.startswith("    ") for line in traceback), shown.stdout  # each letter's line stands out
    assert 'tests/support/apps_reliability.py", line' in shown.stdout and traceback[-1] == "    KeyError: 'broken for good'"


@pytest.mark.both_brokers
def test_purge_asks_first(broker_url, queue_name, dead_queue, amqp):
    kept = taskq("dead", "purge", queue_name, broker_url=broker_url, input="n\n")
    assert kept.returncode == 1 and f"Delete the 3 messages in {queue_name}.dead?" in kept.stdout, kept.stderr
    assert "Traceback" not in kept.stderr and queue_state(amqp, queue_name + ".dead")[0] == 3
    purged = taskq("dead", "purge", queue_name, broker_url=broker_url, input="y\n")
    assert purged.returncode == 0 and "purged 3" in purged.stderr, purged.stderr
    assert queue_state(amqp, queue_name + ".dead")[0] == 0


@pytest.mark.both_brokers
def test_replay_one_then_all_moves_them_back(broker_url, queue_name, dead_queue, amqp):
    result = run(broker_url, "replay", queue_name, "--id", dead_queue[1])
    assert result.exit_code == 0, result.output
    assert queue_state(amqp, queue_name)[0] == 1
    remaining = [line.split()[0] for line in run(broker_url, "list", queue_name).stdout.splitlines()]
    assert remaining == [dead_queue[0], dead_queue[2]]
    message = amqp.channel().basic_get(queue_name, no_ack=True)
    assert message.headers["id"] == dead_queue[1] and message.headers["attempts"] == 0
    assert "reason" not in message.headers and "original_queue" not in message.headers
    result = run(broker_url, "replay", queue_name, "--all")
    assert result.exit_code == 0 and "2 message(s) replayed" in result.stderr
    wait_until(lambda: queue_state(amqp, queue_name)[0] == 2, what="two replayed messages")
    assert queue_state(amqp, queue_name + ".dead")[0] == 0


def test_replayed_task_runs_again(rapp, broker_url, queue_name, start_worker, tmp_path, amqp):
    from tests.support.apps_reliability import always_fails

    start_worker([queue_name], app="tests.support.apps_reliability:app")
    log = tmp_path / "attempts"
    with pytest.raises(Exception):
        always_fails.apply_async((str(log), "KeyError"), queue=queue_name).get(timeout=10)
    wait_until(lambda: queue_state(amqp, queue_name + ".dead")[0] == 1, what="a dead letter")
    assert run(broker_url, "replay", queue_name, "--all").exit_code == 0
    wait_until(lambda: log.read_text().count("attempt") == 2, what="the replayed run")
    wait_until(lambda: queue_state(amqp, queue_name + ".dead")[0] == 1, what="dead again")


@pytest.mark.both_brokers
def test_purge_and_user_errors(broker_url, queue_name, dead_queue, amqp):
    result = run(broker_url, "purge", queue_name, "--yes")
    assert result.exit_code == 0 and "purged 3" in result.stderr
    assert queue_state(amqp, queue_name + ".dead")[0] == 0
    missing = run(broker_url, "list", "no-such-queue-" + uuid.uuid4().hex[:6])
    assert missing.exit_code == 2 and "no queue named" in missing.stderr and "Traceback" not in missing.output
    both = run(broker_url, "replay", queue_name)
    assert both.exit_code == 2 and "exactly one of" in both.stderr
    unknown = run(broker_url, "replay", queue_name, "--id", "nope")
    assert unknown.exit_code == 2 and "no dead letter with id" in unknown.stderr


def test_replay_to_a_deleted_queue_keeps_the_dead_letter(broker_url, queue_name, dead_queue, amqp):
    amqp.channel().queue_delete(queue_name)
    result = run(broker_url, "replay", queue_name, "--all")
    assert result.exit_code == 1 and "stays in" in result.stderr
    assert queue_state(amqp, queue_name + ".dead")[0] == 3
