"""A replay worker's start (issue 14, session 15; docs/decisions.md): what
`python -m services.replay.shards` imports before its job arrives is on the rebuild's
path, so the door's pydantic models (`contracts.inbound`) and the settings
(`services.platform.config`, pydantic_settings) are not among it: the decoder imports
the models the first time a record needs them, and the limits and `InboundError` come
from `contracts.limits`."""

from __future__ import annotations

import os
import subprocess
import sys

import contracts.inbound as inbound
import contracts.limits as limits
from services.projection.decoding import decode_inbound

_HEAVY = ("pydantic", "pydantic_settings", "contracts.inbound", "services.platform.config")


def test_a_replay_workers_imports_leave_out_pydantic_and_the_settings() -> None:
    probe = (
        "import sys, services.replay.shards\n"
        f"print(','.join(m for m in {_HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONSAFEPATH": "1"}, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.stdout.strip() == ""


def test_the_limits_and_the_refusal_are_the_doors_own() -> None:
    """One definition: the door raises the class the projection catches."""
    assert inbound.InboundError is limits.InboundError
    for name in ("MAX_MESSAGE_BYTES", "MAX_DEPTH", "MAX_ID", "MAX_TEXT", "MAX_CONTACT", "MAX_VALUE", "MAX_CHAT_TEXT",
                 "MAX_PROPERTIES_BYTES", "MAX_CHUNK_BYTES", "MAX_CHUNK_ROWS", "_MAX_INT64"):
        assert getattr(inbound, name) == getattr(limits, name), name


def test_a_record_the_fast_path_refuses_still_gets_the_doors_answer() -> None:
    """The lazily imported door words the refusal as `parse_inbound` does."""
    raw = b'{"type": "boot", "eventId": "", "channelId": "c", "occurredAt": 1}'
    try:
        decode_inbound("sdk-events", raw)
    except limits.InboundError as err:
        try:
            inbound.parse_inbound("sdk-events", raw)
        except inbound.InboundError as door:
            assert (err.code, err.message) == (door.code, door.message)
        else:
            raise AssertionError("the door accepted it") from None
    else:
        raise AssertionError("not refused")
