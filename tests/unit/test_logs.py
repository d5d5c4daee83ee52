"""Structured logs (issue 12 "Also"): one JSON object per line with level, logger,
message and the fact's ids; never a secret or raw personal data (issue 11 item 3)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from services.platform import logs

PASSWORD = "hunter2-Secret"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    out = io.StringIO()
    logs.setup("INFO", "json", out)
    try:
        yield out
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_a_log_line_is_one_json_object_with_level_logger_message_and_fact_ids(captured: io.StringIO) -> None:
    log = logging.getLogger("unifier.relay")
    with logs.context(channelId="ch_1", causationId="ev-7"):
        log.warning("parked %d message(s)", 2, extra={"eventId": "uc-9"})
    log.info("outside")

    first, second = _lines(captured)
    assert first["level"] == "WARNING" and first["logger"] == "unifier.relay"
    assert first["message"] == "parked 2 message(s)"
    assert (first["channelId"], first["causationId"], first["eventId"]) == ("ch_1", "ev-7", "uc-9")
    assert str(first["time"]).endswith("Z")
    assert second["message"] == "outside" and "channelId" not in second  # the context ended


def test_no_password_email_or_phone_reaches_a_log_line(captured: io.StringIO) -> None:
    log = logging.getLogger("unifier")
    log.warning("database unavailable: postgresql://unifier:%s@db:5432/unifier", PASSWORD)
    log.warning("keyword form host=db password=%s", PASSWORD)
    log.warning("looked up taro.yamada@example.jp and +81 90-1234-5678 and 090-1234-5678")
    try:
        raise ConnectionError(f"cannot reach postgresql://u:{PASSWORD}@db/x for hanako@example.com")
    except ConnectionError:
        log.exception("failed")

    text = captured.getvalue()
    assert PASSWORD not in text
    assert "taro.yamada" not in text and "hanako" not in text
    assert "1234-5678" not in text
    assert "***@example.jp" in text and "<phone>" in text  # masked, still telling what it was
    failed = _lines(captured)[-1]
    assert failed["error"]["type"] == "ConnectionError"  # type: ignore[index]
    assert "postgresql://u:***@db/x" in failed["error"]["message"]  # type: ignore[index]


def test_ids_and_times_stay_readable() -> None:
    """Offsets, epoch milliseconds and ids are not mistaken for phone numbers."""
    text = "offset 123456789012 at 1746316800000 for u_0123456789 in ch_1"

    assert logs.scrub(text) == text


def test_text_format_for_terminals_is_scrubbed_too() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        logs.setup("INFO", "text", out)
        logging.getLogger("unifier").info("to postgresql://u:%s@db/x", PASSWORD, extra={"eventId": "e1"})
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)

    assert PASSWORD not in out.getvalue() and "[eventId=e1]" in out.getvalue()


def test_context_takes_only_fact_ids() -> None:
    with pytest.raises(ValueError, match="email"), logs.context(email="a@b.jp"):
        pass
