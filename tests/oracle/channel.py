"""Per-channel settings the rules depend on (T1, H1, P2, I17)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from services.domain.values import Rejected

if TYPE_CHECKING:
    from tests.oracle.mu import MuBudget


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    channel_id: str
    member_hash_secret: str | None = None  # H1: when set, logins must carry memberHash
    mu_limit: int | None = None  # I17
    field_types: dict[str, str] = field(default_factory=dict)  # "profile.x" -> P2 type
    # I17: the channel's visible MU as the batch goes, attached by the projection to a
    # channel with a limit (mu.py); None: nothing is masked.
    mu_budget: MuBudget | None = field(default=None, compare=False)


def member_hash(secret: str, member_id: str) -> str:
    """H1: hex HMAC-SHA256 of the memberId with the channel's secret."""
    return hmac.new(secret.encode(), member_id.encode(), hashlib.sha256).hexdigest()


def check_member_hash(settings: ChannelSettings, member_id: str, given: str | None) -> None:
    """H1: a missing or wrong hash rejects the whole fact before anything changes."""
    secret = settings.member_hash_secret
    if secret is None:
        return
    if not given:
        raise Rejected("invalid_member_hash", f"memberHash is required for memberId {member_id!r} in this channel")
    # Compared as bytes: compare_digest refuses str with non-ASCII characters (TypeError).
    if not hmac.compare_digest(member_hash(secret, member_id).encode(), given.strip().lower().encode()):
        raise Rejected("invalid_member_hash", f"memberHash does not match memberId {member_id!r}")
