"""The door's limits and its refusal (`InboundError`), without the models.

`contracts.inbound` defines the inbound messages as pydantic models and re-exports
these names; code that needs only a limit or the refusal type imports them from here,
so that a process which never falls back to the models (a replay worker, issue 14
session 15) does not import pydantic (~0.1 s of an interpreter's start). The values are
the contract's (docs/contract.md, "Limits"); nothing here is a message schema.
"""

from __future__ import annotations

from typing import Literal

_MAX_INT64 = 2**63 - 1

# ------------------------------------------------------------------ limits (the door)
# Checked before anything is stored, so that no record can make PostgreSQL, the broker
# or the JSON encoder fail later (docs/contract.md, "Limits"; docs/decisions.md,
# "Hostile input"). Lengths count characters, sizes count bytes.
MAX_MESSAGE_BYTES = 64 * 1024  # a whole inbound record value
MAX_DEPTH = 10  # objects/arrays nested in a message; the envelope is level 1
MAX_ID = 128  # every identifier and key: eventId, veilId, memberId, chatId, profile keys…
MAX_TEXT = 256  # names and short labels: name, device fields, language, track name…
MAX_CONTACT = 254  # an e-mail address or mobile number as sent (RFC 5321's path limit)
MAX_VALUE = 4096  # a profile string value, each string of a list value, an import cell
MAX_CHAT_TEXT = 16 * 1024  # a chat message's text
MAX_PROPERTIES_BYTES = 16 * 1024  # track.properties, serialised as JSON
# An `import.rows` record (contract 1.3.0): many rows of one import in one record, so the
# broker and the consumer pay per chunk, not per row (docs/decisions.md, "Issue 14,
# session 9: import rows in chunks"). Each row keeps the limits of an `import.row`.
MAX_CHUNK_BYTES = 256 * 1024
MAX_CHUNK_ROWS = 1000

InboundErrorCode = Literal["bad_json", "unknown_type", "invalid_fields", "too_large", "too_deep", "bad_text"]


class InboundError(ValueError):
    """Why a record cannot be applied; `code` and `message` go to the dead letter as is."""

    def __init__(self, code: InboundErrorCode, message: str, raw: bytes | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code: InboundErrorCode = code
        self.message = message
        self.raw = raw  # a chunk's row refused alone: that row as the `import.row` it stands for
