"""Handlers of `identity.sdk-events`: boot, login, chat, contact, track."""

from __future__ import annotations

from operator import attrgetter

from . import limits
from .channel import ChannelSettings, check_member_hash
from .core import Activity, Fact, Outcome, Work, handles, handles_plainly
from .directory import Directory
from .hygiene import clean_email, clean_member_id, clean_mobile, clean_veil_id
from .ids import member_user_id, veil_user_id
from .limits import user_chars
from .profile import has_contact, profile_values, promote, set_values
from .publication import Publication, _message, publish
from .saga import offer_to_leads, on_member_login
from .sessions import (
    DEVICE_KEYS,
    PlatformName,
    logged_out,
    record_device,
    record_visit,
    session_ended,
    veil_expired,
    veil_platform,
)
from .unification import merge
from .user import EMAIL, MOBILE, User, Value
from .values import Rejected
from .view import user_view

EXTERNAL_MEDIA = frozenset({"line", "instagram"})
QUALIFIED_MEDIA = frozenset({"phone", "email"})  # C4: caller id / sender address


@handles("boot", "login")
def on_visit(w: Work) -> None:
    """A page load or login (S1, S2); with a memberId it is a login (U2, H1)."""
    msg = w.fact.msg
    veil = clean_veil_id(msg.veilId)
    member_id = clean_member_id(msg.memberId) if msg.memberId is not None else None
    if member_id is not None:
        check_member_hash(w.settings, member_id, msg.memberHash)
    is_member = member_id is not None
    values = profile_values(msg.profile, w.settings, qualified=is_member, member=is_member, at=w.at)
    if msg.name is not None:
        values["name"] = Value(msg.name, is_member, is_member, w.at)

    platform: PlatformName
    if msg.type == "boot":
        platform = "mobile" if msg.platform == "mobile" else "web"
    else:  # S1: a login counts for the platform of that veil's session
        platform = veil_platform(w.directory.by_veil(w.channel_id, veil), veil)
    user = _visitor(w, veil, member_id)
    record_visit(user, veil, platform, w.at)
    if msg.type == "boot":
        if msg.device is not None:
            record_device(user, platform, msg.device.model_dump())
        user.language = msg.language or user.language
        user.city = msg.city or user.city
        user.country = msg.country or user.country
    set_values(user, values)
    promote(user)
    w.put(user)
    if is_member:
        if EMAIL in values or MOBILE in values:
            offer_to_leads(w, user)  # U5: leads holding the contact the site sent
        on_member_login(w, user)


_DEVICE = attrgetter(*DEVICE_KEYS)  # a message's device fields, in DEVICE_KEYS' order


@handles_plainly("boot", "login")
def plain_visit(d: Directory, fact: Fact, settings: ChannelSettings, messages: bool) -> Outcome | None:
    """`on_visit` for the commonest visits, without the undo log and the diff: a known
    visitor back on its veil (S1, S2; a member on its own veil, U2) that changes nothing
    but its activity, or a first boot of an unknown veil (a new anonymous user, C1).
    Everything that could refuse the fact or make it move more is decided first; None
    (nothing changed) sends the fact to `on_visit`: a profile or name sent (P1–P4), a
    veil expired or logged out (S3, S4), a login that makes, changes or merges a member
    (U2), waiting unifications (U5), a C2 promotion, device, language, city or country
    values it does not have yet, a user never published or masked (I17) that a new
    session would publish, a first visit past the size limit."""
    msg = fact.msg
    if msg.profile or msg.name is not None:
        return None
    ch, at = msg.channelId, fact.at
    veil = clean_veil_id(msg.veilId)  # G1: a refusal raises here, before any change
    member_id = None
    if msg.memberId is not None:
        member_id = clean_member_id(msg.memberId)
        check_member_hash(settings, member_id, msg.memberHash)  # H1
    user = d.by_veil(ch, veil)
    if user is None:
        return _first_visit(d, fact, veil) if member_id is None and msg.type == "boot" else None
    platform: PlatformName
    if msg.type == "boot":
        platform = "mobile" if msg.platform == "mobile" else "web"
        if (veil in user.mobile_veils) != (platform == "mobile"):
            return None  # the veil changes platform: its mobile_veils move (S1)
    else:
        platform = veil_platform(user, veil)
    if veil_expired(user, veil, at):
        return None  # S4: a new anonymous user
    if member_id is None:
        if logged_out(user, veil, at):
            return None  # S3: a new anonymous user
    else:
        member = d.by_member(ch, member_id)
        if member is None or member.id != user.id or d.pending_for(ch, user.id):
            return None  # U2: the veil's user becomes or merges into a member; U5: the saga fires
    if user.type == "anonymous" and has_contact(user):
        return None  # C2: promoted to lead
    plat = user.web if platform == "web" else user.mobile
    if msg.type == "boot":
        if msg.device is not None:
            for key, value in zip(DEVICE_KEYS, _DEVICE(msg.device), strict=True):
                if value is not None and plat.device.get(key) != value:
                    return None  # S2: a device field moves (visible, and counted in the size)
        if ((msg.language or user.language) != user.language or (msg.city or user.city) != user.city
                or (msg.country or user.country) != user.country):
            return None
    # C1: anonymous users are not published; a lead or member is, when a session starts
    # (sessionsCount moves; lastSeenAt alone is quiet), or ever, when never published.
    shown = user.type != "anonymous"
    sessions, platform_sessions = user.sessions_count, plat.sessions_count
    new_session = session_ended(user.last_activity_at, at) or session_ended(plat.last_seen_at, at)
    if shown and (user.version == 0 or (new_session and user.masked)):
        return None

    # Nothing below can fail: apply. Nothing sized moves (the veil is held, no value
    # set), nor anything the MU count reads (I17), nor any identity.
    record_visit(user, veil, platform, at)
    if member_id is not None:
        user.last_login_at = max(user.last_login_at or at, at)  # saga.on_member_login, no one waiting
    d.touched(user)
    outcome = Outcome()
    if shown and new_session:
        keys = []
        if plat.sessions_count != platform_sessions:
            keys.append(f"{platform}.sessionsCount")
        if user.sessions_count != sessions:
            keys.append("sessionsCount")
        keys.sort()  # as publication.changed_keys sorts them
        user.version += 1
        user.updated_at = max(user.updated_at, at)
        if messages:
            view = user_view(user)
            message = _message(user, user.version, "updated", keys, fact.event_id, at, view)
            outcome.publications.append(Publication(f"{ch}:{user.id}", message))
    return outcome


def _first_visit(d: Directory, fact: Fact, veil: str) -> Outcome | None:
    """A boot on a veil no user holds, without memberId: a new anonymous user (S1, S2),
    which is not published (C1) and counts for no MU limit (I17)."""
    msg = fact.msg
    user = _new_anonymous(d, msg.channelId, veil, fact.at)
    if d.get(user.id) is not None:
        return None  # both ids of the veil taken: on_visit replaces (never met)
    platform: PlatformName = "mobile" if msg.platform == "mobile" else "web"
    record_visit(user, veil, platform, fact.at)
    if msg.device is not None:  # record_device on a user with none yet: the fields sent, in its order (S2)
        device = {key: value for key, value in zip(DEVICE_KEYS, _DEVICE(msg.device), strict=True) if value is not None}
        (user.mobile if platform == "mobile" else user.web).device = device
    user.language, user.city, user.country = msg.language or None, msg.city or None, msg.country or None
    if user_chars(user) > limits.MAX_USER_CHARS:
        return None  # on_visit refuses it (user_too_large)
    d.put(user)
    return Outcome()


def _visitor(w: Work, veil: str, member_id: str | None) -> User:
    """The user this veil is now (a working copy), resolving S3/S4 and logins (U2)."""
    d, ch, at = w.directory, w.channel_id, w.at
    cur = d.by_veil(ch, veil)
    if cur is not None and (veil_expired(cur, veil, at) or (member_id is None and logged_out(cur, veil, at))):
        _release_veil(w, cur, veil)
        cur = None
    if member_id is None:
        return w.edit(cur) if cur is not None else new_anonymous(w, veil)

    member = d.by_member(ch, member_id)
    if member is None:
        if cur is not None and cur.type != "member":
            became = w.edit(cur)  # U2: no member has this memberId: the same user becomes it
            became.type, became.member_id = "member", member_id
            # U6: a source that becomes a member itself is no source any more (U1: never
            # member into member): its pending unification and offered candidates go.
            became.pending_into = became.pending_since = None
            became.offered = []
            return became
        if cur is not None:  # another member's browser: the veil changes hands (never member→member, U1)
            _release_veil(w, cur, veil)
        return _new_member(w, member_id)
    if cur is None or cur.id == member.id:
        return w.edit(member)
    if cur.type == "member":
        _release_veil(w, cur, veil)
        return w.edit(member)
    source, target, record = merge(cur, member, at, w.fact.event_id)  # U2: merged at once
    w.put(source)
    w.outcome.merges.append(record)
    return target


def new_anonymous(w: Work, veil: str) -> User:
    """A new anonymous user on a veil. Its id derives from the veil; a veil that had a
    user before (S3 logout, S4 expiry, a deleted user) gets an id that also names the
    time, so ids never collide and replay derives the same ones. The projection
    preloads `veil_user_id(channel, veil)` for every veil of a batch, so the check sees it."""
    return _new_anonymous(w.directory, w.channel_id, veil, w.at)


def _new_anonymous(d: Directory, channel_id: str, veil: str, at: int) -> User:
    uid = veil_user_id(channel_id, veil)
    if d.get(uid) is not None:
        uid = veil_user_id(channel_id, veil, at)
    return User(id=uid, channel_id=channel_id, type="anonymous", created_at=at, updated_at=at)


def _new_member(w: Work, member_id: str) -> User:
    uid = member_user_id(w.channel_id, member_id)
    if w.directory.get(uid) is not None:  # that memberId was deleted once (B3): a new person
        uid = member_user_id(w.channel_id, member_id, w.at)
    return User(id=uid, channel_id=w.channel_id, type="member", member_id=member_id, created_at=w.at, updated_at=w.at)


def _release_veil(w: Work, user: User, veil: str) -> None:
    left = w.edit(user)
    left.veils.pop(veil, None)
    if veil in left.mobile_veils:
        left.mobile_veils = [v for v in left.mobile_veils if v != veil]
    w.put(left)


@handles("chat")
def on_chat(w: Work) -> None:
    """A chat makes a lead (C2, U10); phone/e-mail media carry a qualified contact (C4)
    and attach to the customer holding it (D1)."""
    msg = w.fact.msg
    veil = clean_veil_id(msg.veilId)
    qualified = msg.medium in QUALIFIED_MEDIA
    contacts: dict[str, str] = {}
    if msg.contact is not None:
        if msg.contact.email is not None:
            contacts[EMAIL] = clean_email(msg.contact.email)
        if msg.contact.mobileNumber is not None:
            contacts[MOBILE] = clean_mobile(msg.contact.mobileNumber)

    found = w.directory.by_veil(w.channel_id, veil)
    matched = found is None and (found := _help_desk_match(w, msg.medium, contacts)) is not None  # D1
    if matched and not qualified:
        # A web form matched by e-mail: the customer already holds that address as
        # qualified; what the visitor typed stays typing and is not added to it (C4).
        contacts = {}
    user = w.edit(found) if found is not None else new_anonymous(w, veil)
    if not matched:
        # D1b: a help-desk match attaches the inquiry, never the sender's veil: a contact
        # anyone can claim in a chat must not make that browser the customer (only a
        # login does, H1).
        user.veils.setdefault(veil, w.at)
    user.last_contact_at = max(user.last_contact_at or w.at, w.at)
    is_member = user.type == "member"
    set_values(user, {k: Value(v, qualified, is_member, w.at) for k, v in contacts.items()})
    if user.type == "anonymous":
        user.type = "lead"
    w.put(user)
    body = {"chatId": msg.chatId, "medium": msg.medium}
    if msg.message is not None:
        body.update(messageId=msg.message.messageId, text=msg.message.text)
    body["authorName"] = user.value("name") or user.value("profile.name")  # U4: kept as written
    w.outcome.activities.append(Activity(w.channel_id, user.id, "chat", w.fact.event_id, w.at, body))


@handles_plainly("chat")
def plain_chat(d: Directory, fact: Fact, settings: ChannelSettings, messages: bool) -> Outcome | None:
    """`on_chat` for a chat without contact data from a veil a user holds: it only moves
    that user's last contact and makes an anonymous user a lead (C2). None (nothing
    changed) sends the fact to `on_chat`: contact data sent (C4, D1), an unknown veil,
    an anonymous user already published once, a new lead in a channel with an MU limit
    (I17: it may be masked)."""
    msg = fact.msg
    contact = msg.contact
    if contact is not None and (contact.email is not None or contact.mobileNumber is not None):
        return None
    ch, at = msg.channelId, fact.at
    veil = clean_veil_id(msg.veilId)  # G1: a refusal raises here, before any change
    user = d.by_veil(ch, veil)
    if user is None:
        return None
    promoted = user.type == "anonymous"
    if promoted and (user.version > 0 or settings.mu_budget is not None):
        return None

    # Nothing below can fail. The veil is held already and no value is set: nothing
    # sized moves, nor any identity.
    user.last_contact_at = max(user.last_contact_at or at, at)
    if promoted:
        user.type = "lead"  # C2
    d.touched(user)
    body = {"chatId": msg.chatId, "medium": msg.medium}
    if msg.message is not None:
        body.update(messageId=msg.message.messageId, text=msg.message.text)
    body["authorName"] = user.value("name") or user.value("profile.name")  # U4: kept as written
    outcome = Outcome(activities=[Activity(ch, user.id, "chat", fact.event_id, at, body)])
    if user.version == 0:  # never published (a new lead): its first message, `created`
        published, outcome.publications = publish(None, user, fact.event_id, at, messages=messages)
        if published is not user:
            d.put(published)
    # else: only the last contact moved, which no message shows
    return outcome


def _help_desk_match(w: Work, medium: str, contacts: dict[str, str]) -> User | None:
    """D1: an inquiry from an unknown veil attaches to the customer holding its contact
    as *qualified* data — a phone call by the caller's number, anything else (e-mail,
    web or app form) by the e-mail address — members first, then the latest seen.
    A contact the visitor merely typed somewhere never draws another person's inquiry
    (U9), and a blocked customer is not matched (B1): a call or mail from a contact only
    blocked customers hold is refused, as the guide's blocked caller gets no connection
    (seed 000: 不在着信となり電話接続がされません); a web form naming one is the
    visitor's own inquiry. External messengers carry no contact (U10)."""
    if medium in EXTERNAL_MEDIA:
        return None
    key = MOBILE if medium == "phone" else EMAIL
    value = contacts.get(key)
    if value is None:
        return None
    holders = w.directory.by_contact(w.channel_id, "mobile" if key == MOBILE else "email", value, qualified_only=True)
    users = [u for u in holders if not u.blocked]
    if not users:
        if holders and medium in QUALIFIED_MEDIA:
            raise Rejected(
                "blocked_customer",
                f"the customer holding this {'number' if key == MOBILE else 'address'} is blocked (B1): the inquiry is not taken",
            )
        return None
    return max(users, key=lambda u: (u.type == "member", u.last_seen_at or 0, u.id))


@handles("contact")
def on_contact(w: Work) -> None:
    """Contact data typed by the visitor: unqualified (C4), never unifies (U9); makes a lead (C2)."""
    msg = w.fact.msg
    veil = clean_veil_id(msg.veilId)
    values: dict[str, Value] = {}
    found = w.directory.by_veil(w.channel_id, veil)
    is_member = found is not None and found.type == "member"
    if msg.email is not None:
        values[EMAIL] = Value(clean_email(msg.email), False, is_member, w.at)
    if msg.mobileNumber is not None:
        values[MOBILE] = Value(clean_mobile(msg.mobileNumber), False, is_member, w.at)
    user = w.edit(found) if found is not None else new_anonymous(w, veil)
    user.veils.setdefault(veil, w.at)
    user.last_contact_at = max(user.last_contact_at or w.at, w.at)
    set_values(user, values)
    promote(user)
    w.put(user)


@handles("track")
def on_track(w: Work) -> None:
    """A behaviour event: collected for the veil's user (C1), never published itself."""
    msg = w.fact.msg
    veil = clean_veil_id(msg.veilId)
    found = w.directory.by_veil(w.channel_id, veil)
    if found is None:
        user = new_anonymous(w, veil)
        user.veils[veil] = w.at
        w.put(user)
    else:
        user = found
    body = {"name": msg.name, "properties": msg.properties}
    w.outcome.activities.append(Activity(w.channel_id, user.id, "event", w.fact.event_id, w.at, body))
