"""The `user` object of docs/contract.md, as consumers and `unifier user show` see it."""

from __future__ import annotations

from typing import Any

from .user import CONTACT_KEYS, Platform, User

_PREFIX = "profile."


def user_view(user: User) -> dict[str, Any]:
    """Masked users (I17) show no personal data: name, profile and memberId are null."""
    profile = {
        key[len(_PREFIX):]: val.v
        for key, val in sorted(user.fields.items())
        if key.startswith(_PREFIX) and val.v is not None
    }
    qualified = sorted(
        key[len(_PREFIX):]
        for key in CONTACT_KEYS
        if (val := user.fields.get(key)) is not None and val.v is not None and val.q
    )
    masked = user.masked
    return {
        "id": user.id,
        "channelId": user.channel_id,
        "type": user.type,
        "memberId": None if masked else user.member_id,
        "name": None if masked else user.value("name"),
        "tags": list(user.tags),
        "userImportTags": list(user.import_tags),
        "profile": None if masked else profile,
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
        "lastSeenAt": user.last_seen_at if user.last_seen_at is not None else user.created_at,
        "createdAt": user.created_at,
        "updatedAt": user.updated_at,
        "web": _platform(user.web),
        "mobile": _platform(user.mobile),
        "deliveredCampaigns": list(user.delivered),
        "mergedUserIds": list(user.merged_user_ids),
    }


def _platform(p: Platform) -> dict[str, Any]:
    """Every device key present (null when unknown), as the contract writes absent values.
    Spelled out in DEVICE_KEYS' order (a comprehension merged in cost twice as much; every
    message builds two); tests/unit/test_publication.py checks them against sessions.DEVICE_KEYS."""
    get = p.device.get
    return {
        "sessionsCount": p.sessions_count, "lastSeenAt": p.last_seen_at, "browser": get("browser"),
        "browserName": get("browserName"), "os": get("os"), "osName": get("osName"), "device": get("device"),
        "appName": get("appName"), "appVersion": get("appVersion"),
    }
