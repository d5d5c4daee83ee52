"""Deterministic identifiers (DESIGN: no random ids; replay must rebuild the same ids).

Every user id is a name-based UUID of the identifiers that created the user, so a
rebuild from the same facts yields the same ids, and two instances racing to create
the same member compute the same id (the primary key then fences them, G3).
"""

from __future__ import annotations

import hashlib
import uuid

_NAMESPACE = uuid.UUID("5b0c6f5e-3d0a-4a8e-9a51-6e1f0c2d7a11")
_SEP = "\x1f"


_NS = _NAMESPACE.bytes


def _name_uuid(*parts: str) -> str:
    """`uuid.uuid5(_NAMESPACE, name).hex` without the UUID objects (~1 µs against ~5 µs)."""
    h = bytearray(hashlib.sha1(_NS + _SEP.join(parts).encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    return h.hex()


def veil_user_id(channel_id: str, veil_id: str, since: int | None = None) -> str:
    """An anonymous user first seen on a veil; `since` tells later generations apart
    (S3: a new anonymous user after logout, S4: after the veil expired)."""
    parts = (channel_id, "veil", veil_id) if since is None else (channel_id, "veil", veil_id, str(since))
    return "u_" + _name_uuid(*parts)


def member_user_id(channel_id: str, member_id: str) -> str:
    """A user created as a member (login on an unknown veil, member.upsert, member
    import): keyed by memberId so every path that creates that member agrees."""
    return "u_" + _name_uuid(channel_id, "member", member_id)


def fact_user_id(channel_id: str, event_id: str) -> str:
    """A user created by one fact with no natural key (lead.create, a lead import row)."""
    return "u_" + _name_uuid(channel_id, "fact", event_id)


def outbound_event_id(user_id: str, version: int) -> str:
    """The eventId of a user-changed message: one per (user, version), so a replayed
    or re-sent publication carries the same id and consumers can dedupe."""
    return _name_uuid("user-changed", user_id, str(version))
