"""The `user` object of docs/contract.md, as consumers and `unifier user show` see it."""

from __future__ import annotations

from typing import Any

from .user import CONTACT_KEYS, Platform, User

_PREFIX = "profile."
_CUT = len(_PREFIX)
# `qualified` lists the contact keys holding a qualified value, by their profile name,
# sorted: the pairs are in that order once and for all.
_QUALIFIED = tuple(sorted((key[_CUT:], key) for key in CONTACT_KEYS))


def user_view(user: User) -> dict[str, Any]:
    """Masked users (I17) show no personal data: name, profile and memberId are null.

    The API's reads build one per user, and a `user-changed` message holding a value
    the C writer leaves to the reference (publication.message_body; the others are
    written by it in this key order), so it is built in one pass over the fields, and
    the lists go in as they are: users never change a list in place (user.py), and the
    view is serialised before the next fact.
    Callers that keep a view and change it must copy it. tests/unit/test_publication.py holds
    it equal to the reference definition (tests/oracle/view.py)."""
    masked = user.masked
    profile, name, qualified = profile_parts(user)
    if masked:
        profile = name = None  # type: ignore[assignment]
    last_seen = user.last_seen_at
    return {
        "id": user.id,
        "channelId": user.channel_id,
        "type": user.type,
        "memberId": None if masked else user.member_id,
        "name": name,
        "tags": user.tags,
        "userImportTags": user.import_tags,
        "profile": profile,
        "qualified": qualified,
        "unsubscribeEmail": user.unsubscribe_email,
        "unsubscribeTexting": user.unsubscribe_texting,
        "blocked": user.blocked,
        "masked": masked,
        "language": user.language,
        "city": user.city,
        "country": user.country,
        "sessionsCount": user.sessions_count,
        # Never null: users that never visited were last seen when created (I11).
        "lastSeenAt": last_seen if last_seen is not None else user.created_at,
        "createdAt": user.created_at,
        "updatedAt": user.updated_at,
        "web": _platform(user.web),
        "mobile": _platform(user.mobile),
        "deliveredCampaigns": user.delivered,
        "mergedUserIds": user.merged_user_ids,
    }


def profile_parts(user: User) -> tuple[dict[str, Any], Any, list[str]]:
    """The view's `profile` (its keys in order: the contract's JSON is stable), `name` and
    `qualified`, unmasked, in one pass over the fields (user_view)."""
    fields = user.fields
    profile: dict[str, Any] = {}
    name = None
    qualified: list[str] = []
    if fields:
        prefix, cut = _PREFIX, _CUT  # bound once: compiled, a module name is a dict lookup a use
        for key in sorted(fields):
            v = fields[key].v
            if v is not None:
                if key.startswith(prefix):
                    profile[key[cut:]] = v
                elif key == "name":
                    name = v
        for short, key in _QUALIFIED:
            val = fields.get(key)
            if val is not None and val.v is not None and val.q:
                qualified.append(short)
    return profile, name, qualified


def _platform(p: Platform) -> dict[str, Any]:
    """Every device key present (null when unknown), as the contract writes absent values.
    Spelled out in DEVICE_KEYS' order (a comprehension merged in cost twice as much; every
    message builds two); tests/unit/test_publication.py checks them against sessions.DEVICE_KEYS.
    `device.get(...)` each time, not a bound `get`: compiled, that is a direct dict lookup,
    and a bound method a generic call (~4× the cost)."""
    device = p.device
    if not device:  # no device described (every imported user): ~1 k instructions less a platform
        return {
            "sessionsCount": p.sessions_count, "lastSeenAt": p.last_seen_at, "browser": None, "browserName": None,
            "os": None, "osName": None, "device": None, "appName": None, "appVersion": None,
        }
    return {
        "sessionsCount": p.sessions_count, "lastSeenAt": p.last_seen_at, "browser": device.get("browser"),
        "browserName": device.get("browserName"), "os": device.get("os"), "osName": device.get("osName"),
        "device": device.get("device"), "appName": device.get("appName"), "appVersion": device.get("appVersion"),
    }
