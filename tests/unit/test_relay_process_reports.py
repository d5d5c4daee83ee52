"""Issue 14, session 15 ("the relay's process"): the relay's child process reports its
counters as totals; the main process's `/metrics` adds only what is new, so a report
seen twice (or one every 0.25 s) counts each published message once, and the child's
gauges and health are taken as they are."""

from __future__ import annotations

import orjson

from services.platform import metrics
from services.platform.config import Settings
from services.runtime.relay_process import _report, _Reported, child_settings


def _published(topic: str) -> float:
    return metrics.PUBLISHED.labels(topic=topic)._value.get()  # type: ignore[attr-defined,no-any-return]


def test_reports_carry_totals_and_the_main_process_adds_each_message_once() -> None:
    reported = _Reported()
    before = _published("t.rp-report")
    for total in (3, 3, 5):  # a report repeated counts nothing more
        reported.apply({"healthy": True, "backlog": 7, "parked_messages": 1,
                        "published": {"t.rp-report": total}, "parked": [["t.rp-report", "message_too_large", 1]]})
    assert _published("t.rp-report") - before == 5
    assert reported.healthy
    assert metrics.OUTBOX_BACKLOG._value.get() == 7  # type: ignore[attr-defined]
    reported.apply({"healthy": False})
    assert not reported.healthy


def test_a_report_is_one_line_under_pipe_buf_with_the_childs_counts() -> None:
    """One write on a pipe is atomic up to PIPE_BUF (4096): all of a report or none."""
    metrics.PUBLISHED.labels(topic="t.rp-line").inc(2)
    line = _report(True)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and len(line) < 4096
    body = orjson.loads(line)
    assert body["healthy"] is True and body["published"]["t.rp-line"] == 2


def test_the_child_is_given_the_broker_and_database_in_use_never_embedded_ones() -> None:
    main = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DATABASE_URL": "postgresql://x@db/u",
                              "UNIFIER_PROJECTION_PROCESSES": "2", "UNIFIER_RELAY_PROCESS": "true"})
    child = child_settings(main)
    assert main.relay_process is True
    assert child.embedded is False and child.projection_processes == 1
    assert child.kafka_bootstrap == "k:9092" and child.database_url == main.database_url
