"""The `user` object of CONTRACT.md, as consumers and `unifier user show` see it."""

from __future__ import annotations

from typing import Any

from .user import CONTACT_KEYS, User

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
        "hasPushToken": user.has_push_token,
        "blocked": user.blocked,
        "masked": masked,
        "language": user.language,
        "city": user.city,
        "country": user.country,
        "sessionsCount": user.sessions_count,
        "lastSeenAt": user.last_seen_at,
        "createdAt": user.created_at,
        "updatedAt": user.updated_at,
        "web": user.web.to_json(),
        "mobile": user.mobile.to_json(),
        "deliveredCampaigns": list(user.delivered),
        "mergedUserIds": list(user.merged_user_ids),
    }
