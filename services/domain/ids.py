"""Deterministic identifiers (DESIGN: no random ids; replay must rebuild the same ids).

Every user id is a name-based UUID of the identifiers that created the user, so a
rebuild from the same facts yields the same ids, and two instances racing to create
the same member compute the same id (the primary key then fences them, G3).
"""

from __future__ import annotations

import hashlib
import uuid
from functools import lru_cache
from typing import Final

_NAMESPACE = uuid.UUID("5b0c6f5e-3d0a-4a8e-9a51-6e1f0c2d7a11")
_NS: Final = _NAMESPACE.bytes
_SEP: Final = "\x1f"
# Ids version 2 (contract 1.1.0): a name must be an unambiguous encoding of its parts.
# Version 1 joined the parts with U+001F, which a part (a veilId, a memberId, an eventId)
# may itself contain, so two different inputs could derive one id. Joining stays
# unambiguous for parts without U+001F (the separators are exactly the part boundaries),
# so those keep their version-1 names and every id ever issued for them stays the same;
# a part holding U+001F makes the name length-prefixed, hashed in a namespace of its own,
# so it can meet no joined name. Upgrading: docs/operations.md, "Ids version 2".
_NS_ENCODED = uuid.UUID("9d3a1c52-7e40-4f6b-8c1e-2b5f0a7d3e64").bytes
IDS_VERSION = 2


def encode_parts(*parts: str) -> bytes:
    """Each part as its UTF-8 length, `:`, its bytes (a netstring without the trailing
    comma): no part can end early or run into the next, whatever characters it holds."""
    out = bytearray()
    for part in parts:
        raw = part.encode()
        out += b"%d:" % len(raw)
        out += raw
    return bytes(out)


def _name(*parts: str) -> bytes:
    """The namespaced name of `parts`, unambiguous (see IDS_VERSION)."""
    for part in parts:
        if _SEP in part:
            return _NS_ENCODED + encode_parts(*parts)
    return _NS + _SEP.join(parts).encode()


def _name_uuid(*parts: str) -> str:
    """`uuid.uuid5(namespace, name).hex` without the UUID objects (~1 µs against ~5 µs)."""
    return _uuid_of(_name(*parts))


def _uuid_of(name: bytes) -> str:
    """The name-based (version 5) UUID of a namespaced name, as hex."""
    h = bytearray(hashlib.sha1(name).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    return h.hex()


# Remembered: the projection derives the id of every fact's veil and member to load them,
# and the handler derives it again when it creates the user (issue 14: ids once per fact).
@lru_cache(maxsize=65_536)
def veil_user_id(channel_id: str, veil_id: str, since: int | None = None) -> str:
    """An anonymous user first seen on a veil; `since` tells later generations apart
    (S3: a new anonymous user after logout, S4: after the veil expired)."""
    parts = (channel_id, "veil", veil_id) if since is None else (channel_id, "veil", veil_id, str(since))
    return "u_" + _name_uuid(*parts)


@lru_cache(maxsize=65_536)
def member_user_id(channel_id: str, member_id: str, since: int | None = None) -> str:
    """A user created as a member (login on an unknown veil, member.upsert, member
    import): keyed by memberId so every path that creates that member agrees; `since`
    tells a later person with a memberId deleted once (B3) apart."""
    parts = (channel_id, "member", member_id) if since is None else (channel_id, "member", member_id, str(since))
    return "u_" + _name_uuid(*parts)


def fact_user_id(channel_id: str, event_id: str) -> str:
    """A user created by one fact with no natural key (lead.create, a lead import row)."""
    return "u_" + _name_uuid(channel_id, "fact", event_id)


def outbound_event_id(user_id: str, version: int) -> str:
    """The eventId of a user-changed message: one per (user, version), so a replayed
    or re-sent publication carries the same id and consumers can dedupe.
    Every published message derives one: its name is built here as `_name` builds it
    for parts without U+001F (a user id is "u_" and hex), without `_name`'s generic
    steps; a user id holding one takes them."""
    if _SEP in user_id:
        return _name_uuid("user-changed", user_id, str(version))
    return _uuid_of(_OUTBOUND + (user_id + _SEP + str(version)).encode())


_OUTBOUND = _NS + ("user-changed" + _SEP).encode()  # _name("user-changed", …)'s start
