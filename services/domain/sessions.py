"""Sessions and activity (S1–S4)."""

from __future__ import annotations

from typing import Any, Final, Literal

from .user import User

SESSION_GAP_MS: Final = 30 * 60 * 1000  # S1: a session ends after 30 minutes without activity
VEIL_TTL_MS: Final = 365 * 24 * 60 * 60 * 1000  # S4: an anonymous veil expires a year after its last boot

PlatformName = Literal["web", "mobile"]
# Typed as a tuple of any length: compiled, a 7-tuple type is held unboxed (a C struct),
# and each `DEVICE_KEYS[i]` with a variable `i` built a new Python tuple of it first
# (~200 instructions a device key of a boot; issue 14, session 18).
DEVICE_KEYS: Final[tuple[str, ...]] = ("browser", "browserName", "os", "osName", "device", "appName", "appVersion")


def device_values(sent: Any) -> tuple[str | None, ...]:
    """A boot's device fields (`device.as_tuple`), one per DEVICE_KEYS in its order, for
    loops by index over both: compiled, `zip(DEVICE_KEYS, sent, strict=True)` was a
    generic call and generic iteration (~2.7 k instructions a boot with a device; issue
    14, session 15). A tuple of another length raises as that zip raised."""
    values: tuple[str | None, ...] = sent
    if len(values) != len(DEVICE_KEYS):
        side = "shorter" if len(values) < len(DEVICE_KEYS) else "longer"
        raise ValueError(f"zip() argument 2 is {side} than argument 1")
    return values


def session_ended(last_activity: int | None, at: int) -> bool:
    return last_activity is None or at - last_activity > SESSION_GAP_MS


def record_visit(user: User, veil_id: str, platform: PlatformName, at: int) -> None:
    """A boot or login: counts a session when the last one has ended (S1), moves
    lastSeenAt forward (S2; a late fact never moves it back) and keeps the veil's last
    activity for logout (S3) and expiry (S4). Mutates the working copy."""
    plat = user.web if platform == "web" else user.mobile
    # The times move only forward (a late fact never moves them back), each set to `now`,
    # the event time boxed once: compiled, each store of an `int` into an `int | None`
    # attribute allocates a new int object (six a visit before; issue 14, session 15).
    now: int | None = at
    last = user.last_activity_at
    if session_ended(last, at):
        user.sessions_count += 1
    if last is None or at > last:
        user.last_activity_at = now
    last = plat.last_seen_at
    if session_ended(last, at):  # per platform: a first app boot inside a web session is an app session
        plat.sessions_count += 1
    if last is None or at > last:
        plat.last_seen_at = now
    last = user.last_seen_at
    if last is None or at > last:
        user.last_seen_at = now
    last = user.veils.get(veil_id)
    if last is None or at > last:
        user.veils[veil_id] = at
    if (veil_id in user.mobile_veils) != (platform == "mobile"):
        user.mobile_veils = sorted({*user.mobile_veils} ^ {veil_id})
    last = user.last_contact_at
    if last is None or at > last:
        user.last_contact_at = now
    user.booted = True


def veil_platform(user: User | None, veil_id: str) -> PlatformName:
    """S1: the platform of the veil's session, for a `login` (which names none): the
    platform the veil last booted on; web for a veil never booted."""
    return "mobile" if user is not None and veil_id in user.mobile_veils else "web"


def record_device(user: User, platform: PlatformName, device: tuple[str | None, ...]) -> None:
    """S2: the latest boot's device fields (a message's `device.as_tuple`, in DEVICE_KEYS'
    order) replace the previous ones."""
    plat = user.web if platform == "web" else user.mobile
    values = device_values(device)
    for i in range(len(DEVICE_KEYS)):
        value = values[i]
        if value is not None:
            plat.device[DEVICE_KEYS[i]] = value


def veil_expired(user: User, veil_id: str, at: int) -> bool:
    """S4: a boot on an anonymous user's veil a year after its last boot is a new user."""
    last = user.veils.get(veil_id)
    return user.type == "anonymous" and last is not None and at - last > VEIL_TTL_MS


def logged_out(user: User, veil_id: str, at: int) -> bool:
    """S3: a member's veil booting without memberId after the session ended belongs to
    a new anonymous user; within the session it is still that member."""
    last = user.veils.get(veil_id)
    return user.type == "member" and (last is None or at - last > SESSION_GAP_MS)
