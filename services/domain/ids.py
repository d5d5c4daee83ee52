"""Deterministic identifiers (DESIGN: no random ids; replay must rebuild the same ids).

Every user id is a name-based UUID of the identifiers that created the user, so a
rebuild from the same facts yields the same ids, and two instances racing to create
the same member compute the same id (the primary key then fences them, G3).
"""

from __future__ import annotations

import uuid
from hashlib import sha1
from typing import Final

try:  # the C helper built with the compiled core (services/domain/_native.c); interpreted, hashlib
    from ._native import uuid_hex as _native_uuid_hex
except ImportError:
    _native_uuid_hex = None  # type: ignore[assignment]
_native_uuid: Final = _native_uuid_hex  # compiled, a static read (not the module's dict)

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
    """The name-based (version 5) UUID of a namespaced name, as hex: by the C helper
    (`_native.uuid_hex`: its own SHA-1 of the name, ~1.5 k instructions in all; issue 14,
    session 19) when the process runs the compiled core, else `_uuid_of_reference`."""
    if _native_uuid is not None:
        return _native_uuid(name)
    return _uuid_of_reference(name)


def _uuid_of_reference(name: bytes) -> str:
    """`_uuid_of` by hashlib. The SHA-1 (~5.3 k instructions, OpenSSL's context set-up
    and digest) is most of it; a hash of the fixed prefix fed once and copied per id costs
    the same, and reading the digits off `hexdigest()` as text costs more compiled than
    these bytearray steps (measured, issue 14, session 15)."""
    h = bytearray(sha1(name).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    return h.hex()


# The ids of veils and memberIds without `since`, remembered per channel and text: the
# projection derives the id of every fact's veil and member to load them, and the handler
# derives it again when it creates the user (issue 14: ids once per fact). Plain dicts
# emptied when full (hygiene's way), not lru caches: compiled, a call of an lru-cached
# function is a generic call into functools' wrapper (~1.4 k instructions a hit), and a
# new veil's id went through it and `_name_uuid`'s generic steps (~4 k besides the hash;
# issue 14, session 15). Pure functions of the text: remembering changes no id.
_REMEMBERED: Final = 65_536


class _Remembered:
    def __init__(self) -> None:
        self.veils: dict[str, dict[str, str]] = {}
        self.members: dict[str, dict[str, str]] = {}
        self.size = 0

    def id_of(self, memo: dict[str, dict[str, str]], channel_id: str, kind: str, text: str) -> str:
        """The id of `text` (a veilId or memberId, as `kind` says) in `channel_id`: the
        remembered one, else derived and kept."""
        of = memo.get(channel_id)
        if of is not None and (known := of.get(text)) is not None:
            return known
        return self.keep(memo, channel_id, text, _joined_id(channel_id, kind, text))

    def keep(self, memo: dict[str, dict[str, str]], channel_id: str, text: str, uid: str) -> str:
        """Remember `uid` as the id of `text` in `channel_id` (everything is forgotten
        first when `_REMEMBERED` ids are held); `uid`."""
        self.size += 1
        if self.size > _REMEMBERED:
            self.forget()
        of = memo.get(channel_id)
        if of is None:
            of = memo[channel_id] = {}
        of[text] = uid
        return uid

    def forget(self) -> None:
        self.veils.clear()
        self.members.clear()
        self.size = 0


_IDS: Final = _Remembered()


def forget() -> None:
    """Empty the remembered ids (benchmarks start each round cold)."""
    _IDS.forget()


def _joined_id(channel_id: str, kind: str, value: str) -> str:
    """`"u_" + _name_uuid(channel_id, kind, value)`, the name built directly when no part
    holds U+001F (`kind` is a literal without one), as `_name` builds it."""
    if _SEP in channel_id or _SEP in value:
        return "u_" + _name_uuid(channel_id, kind, value)
    return "u_" + _uuid_of(_NS + f"{channel_id}\x1f{kind}\x1f{value}".encode())  # one string built (compiled)


def veil_user_id(channel_id: str, veil_id: str, since: int | None = None) -> str:
    """An anonymous user first seen on a veil; `since` tells later generations apart
    (S3: a new anonymous user after logout, S4: after the veil expired)."""
    if since is not None:
        return "u_" + _name_uuid(channel_id, "veil", veil_id, str(since))
    return _IDS.id_of(_IDS.veils, channel_id, "veil", veil_id)


def member_user_id(channel_id: str, member_id: str, since: int | None = None) -> str:
    """A user created as a member (login on an unknown veil, member.upsert, member
    import): keyed by memberId so every path that creates that member agrees; `since`
    tells a later person with a memberId deleted once (B3) apart."""
    if since is not None:
        return "u_" + _name_uuid(channel_id, "member", member_id, str(since))
    return _IDS.id_of(_IDS.members, channel_id, "member", member_id)


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
    return _uuid_of(_OUTBOUND + f"{user_id}\x1f{version}".encode())  # one string built (compiled)


_OUTBOUND = _NS + ("user-changed" + _SEP).encode()  # _name("user-changed", …)'s start
