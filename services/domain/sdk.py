"""Handlers of `identity.sdk-events`: boot, login, chat, contact, track."""

from __future__ import annotations

from typing import Any, Final

from . import limits
from .channel import ChannelSettings, check_member_hash
from .core import Activity, Fact, Outcome, Work, handles, handles_plainly
from .directory import Directory
from .hygiene import clean_email, clean_member_id, clean_mobile, clean_veil_id
from .ids import member_user_id, veil_user_id
from .limits import user_chars
from .priority import update_wins
from .profile import has_contact, profile_values, promote, set_values
from .publication import Publication, message_body, publish
from .saga import offer_to_leads, on_member_login
from .sessions import (
    DEVICE_KEYS,
    PlatformName,
    device_values,
    logged_out,
    record_device,
    record_visit,
    session_ended,
    veil_expired,
    veil_platform,
)
from .unification import merge
from .user import CONTACT_KEYS, EMAIL, MOBILE, User, Value, new_user, new_value
from .values import Rejected

EXTERNAL_MEDIA: Final = frozenset({"line", "instagram"})
QUALIFIED_MEDIA: Final = frozenset({"phone", "email"})  # C4: caller id / sender address


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
        values["name"] = new_value(msg.name, is_member, is_member, w.at)

    platform: PlatformName
    if w.fact.type == "boot":
        platform = "mobile" if msg.platform == "mobile" else "web"
    else:  # S1: a login counts for the platform of that veil's session
        platform = veil_platform(w.directory.by_veil(w.channel_id, veil), veil)
    user = _visitor(w, veil, member_id)
    record_visit(user, veil, platform, w.at)
    if w.fact.type == "boot":
        _record_boot(user, msg, platform)
    set_values(user, values)
    promote(user)
    w.put(user)
    if is_member:
        if EMAIL in values or MOBILE in values:
            offer_to_leads(w, user)  # U5: leads holding the contact the site sent
        on_member_login(w, user)


def _record_boot(user: User, msg: Any, platform: PlatformName) -> None:
    """S2: what a boot tells of the visitor besides the visit — its device fields and
    the language, city and country it sent (absent ones keep the user's)."""
    if (device := msg.device) is not None:
        record_device(user, platform, device.as_tuple)  # not model_dump(): interpreted Python for a struct
    user.language = msg.language or user.language
    user.city = msg.city or user.city
    user.country = msg.country or user.country


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
    w.outcome.merges += (record,)
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
    return new_user(uid, channel_id, "anonymous", at)


def _new_member(w: Work, member_id: str) -> User:
    uid = member_user_id(w.channel_id, member_id)
    if w.directory.get(uid) is not None:  # that memberId was deleted once (B3): a new person
        uid = member_user_id(w.channel_id, member_id, w.at)
    return new_user(uid, w.channel_id, "member", w.at, member_id)


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
    contacts = _chat_contacts(msg)

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
    set_values(user, {k: new_value(v, qualified, is_member, w.at) for k, v in contacts.items()})
    if user.type == "anonymous":
        user.type = "lead"
    w.put(user)
    body = {"chatId": msg.chatId, "medium": msg.medium}
    if msg.message is not None:
        body.update(messageId=msg.message.messageId, text=msg.message.text)
    body["authorName"] = user.value("name") or user.value("profile.name")  # U4: kept as written
    w.outcome.activities += (Activity(w.channel_id, user.id, "chat", w.fact.event_id, w.at, body),)


def _chat_contacts(msg: Any) -> dict[str, str]:
    """The contact data a chat carries, cleaned (G1: a bad one raises)."""
    contacts: dict[str, str] = {}
    if (sent := msg.contact) is not None:  # each field read once: a generic lookup compiled
        if (email := sent.email) is not None:
            contacts[EMAIL] = clean_email(email)
        if (mobile := sent.mobileNumber) is not None:
            contacts[MOBILE] = clean_mobile(mobile)
    return contacts


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
        values[EMAIL] = new_value(clean_email(msg.email), False, is_member, w.at)
    if msg.mobileNumber is not None:
        values[MOBILE] = new_value(clean_mobile(msg.mobileNumber), False, is_member, w.at)
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
    w.outcome.activities += (Activity(w.channel_id, user.id, "event", w.fact.event_id, w.at, body),)


# -- plain paths (core.PLAIN) -----------------------------------------------------------
# The commonest SDK facts, applied without the undo log, the snapshot and the diff of
# the general path: each decides first, from the user as it is, everything that could
# refuse the fact or make it do more than it knows how to, and returns None *before any
# change* when that is the case (the handler above then applies the fact). What it
# changes it knows, so it knows the message's changed keys without comparing views.
# The one check that needs the changed user, the size (limits), comes before anything
# else moves, and what it changed for it is put back when the user would be too large.
# test_core_differential holds every outcome and state equal to the oracle's.


@handles_plainly("boot", "login")
def plain_visit(d: Directory, fact: Fact, settings: ChannelSettings, messages: bool) -> Outcome | None:
    """`on_visit` for the commonest visits (S1, S2): a first boot of an unknown veil (a
    new anonymous user), or a known visitor back on its veil — a member on its own veil,
    or a visitor logging in with a memberId no one has (U2: it becomes that member) —
    with profile values, contact data only for a member. None sends the fact to
    `on_visit`: a visitor's contact data (C2, C4), a member's that other users hold (U5:
    they are offered it), a veil expired or logged out (S3, S4), a login that merges a
    visitor or takes another member's veil (U1, U2), waiting unifications (U5), a C2
    promotion, device, language, city or country values it does not have yet, a masked
    user whose message would move (I17), a new MU in a channel with a limit, a user that
    would grow past the size limit."""
    # Where the visit leads first (cheap), then what it carries (the member hash, the
    # values): a visit handed over is not validated twice for nothing.
    msg = fact.msg
    ch, at = fact.channel_id, fact.at
    veil = clean_veil_id(msg.veilId)  # G1: refusals raise here, before any change
    member_id = None if (sent_member := msg.memberId) is None else clean_member_id(sent_member)
    is_member = member_id is not None
    user = d.by_veil(ch, veil)
    if user is None:
        if is_member or fact.type != "boot":
            return None
        values = _visit_values(msg, settings, False, at)
        if EMAIL in values or MOBILE in values:
            return None  # C2, C4: a visitor's contact data
        return _first_visit(d, fact, veil, values)
    member = None if member_id is None else d.by_member(ch, member_id)
    if member is not None and member is not user:
        # U2: merged into the member (or the veil released); decided first, a third of logins
        return _merging_visit(d, fact, settings, messages, veil, member_id, user, member)  # type: ignore[arg-type]

    boot = fact.type == "boot"
    platform: PlatformName
    if boot:
        platform = "mobile" if msg.platform == "mobile" else "web"
        if (veil in user.mobile_veils) != (platform == "mobile"):
            return None  # the veil changes platform: its mobile_veils move (S1)
    else:
        platform = veil_platform(user, veil)
    if veil_expired(user, veil, at):
        return None  # S4: a new anonymous user
    becomes = False  # U2: the visitor becomes the member its memberId names
    if member_id is None:
        if logged_out(user, veil, at):
            return None  # S3: a new anonymous user
    else:
        if member is None:
            if user.type == "member":
                return None  # another member's browser: the veil changes hands (U1)
            if user.type == "anonymous" and settings.mu_budget is not None:
                return None  # I17: a new MU, maybe masked
            becomes = True
        if d.pending_for(ch, user.id):
            return None  # U5: the member's login fires the unifications waiting for it
    if user.type == "anonymous" and not becomes and has_contact(user):
        return None  # C2: promoted to lead
    plat = user.web if platform == "web" else user.mobile
    if boot:
        if (device := msg.device) is not None:
            sent = device_values(device.as_tuple)
            for i in range(len(DEVICE_KEYS)):
                value = sent[i]
                if value is not None and plat.device.get(DEVICE_KEYS[i]) != value:
                    return None  # S2: a device field moves (shown, and counted in the size)
        if ((msg.language or user.language) != user.language or (msg.city or user.city) != user.city
                or (msg.country or user.country) != user.country):
            return None
    if member_id is not None:
        check_member_hash(settings, member_id, msg.memberHash)  # H1: a refusal raises here
    values = _visit_values(msg, settings, is_member, at)
    contacts = EMAIL in values or MOBILE in values
    if contacts and not is_member:
        return None  # C2, C4: a visitor's contact data
    old_fields = user.fields
    won = {key: new for key, new in values.items() if update_wins(key, new, old_fields.get(key))} if values else values  # C4, P3
    new_fields = {**old_fields, **won} if won else old_fields
    if contacts and _offered(d, user, new_fields):
        return None  # U5: saga.offer_to_leads notes the member on the leads holding its contact
    new_session = session_ended(user.last_activity_at, at) or session_ended(plat.last_seen_at, at)
    shown = becomes or user.type != "anonymous"  # C1
    if shown and user.masked and user.version > 0 and (new_session or won or becomes):
        return None  # I17: a masked user's message shows less; publication.publish decides it

    # What the size counts: the values that won, and the member's id (U2: a source no
    # more, U6). Put back if the user would be too large (on_visit refuses the fact).
    was = user.type, user.member_id, user.pending_into, user.pending_since, user.offered
    user.fields = new_fields
    if becomes:
        user.type, user.member_id = "member", member_id
        user.pending_into = user.pending_since = None
        user.offered = []
    if (won or becomes) and user_chars(user) > limits.MAX_USER_CHARS:
        user.fields = old_fields
        user.type, user.member_id, user.pending_into, user.pending_since, user.offered = was
        return None

    # Nothing below can fail.
    sessions, platform_sessions = user.sessions_count, plat.sessions_count
    record_visit(user, veil, platform, at)
    if is_member:
        user.last_login_at = max(user.last_login_at or at, at)  # saga.on_member_login, no one waiting
    if becomes or contacts:
        d.put(user)  # its member key (and no pending one), its contact keys
    else:
        d.touched(user)
    outcome = Outcome()
    if shown:
        keys = [key for key, new in won.items() if _shown_value(old_fields.get(key)) != new.v]
        if plat.sessions_count != platform_sessions:
            keys.append(f"{platform}.sessionsCount")
        if user.sessions_count != sessions:
            keys.append("sessionsCount")
        if was[0] != user.type:
            keys.append("type")
        if was[1] != user.member_id:
            keys.append("memberId")
        if contacts and _qualified(old_fields) != _qualified(new_fields):
            keys.append("qualified")
        outcome.publications = _publish(user, keys, fact, messages)
    return outcome


def _merging_visit(
    d: Directory, fact: Fact, settings: ChannelSettings, messages: bool, veil: str, member_id: str,
    user: User, member: User,
) -> Outcome | None:
    """`on_visit` for a visit with the memberId of a member other than the veil's user:
    an anonymous user or lead merged into that member at once (U2; U3 winners, U4 the
    rest, G4 the record, U8 the husk), the visit then recorded on the merged member (S1,
    S2) with the values it carries (P3) and its login time (the saga's trigger, with no
    one waiting). `unification.merge` builds the husk and the merged member as new
    states, so everything is decided and built on them and the directory changes only at
    the end: no undo log. Messages and versions come from `publication.publish` as on
    the general path (the husk's `merged` and tombstone, then the member's `updated`).
    None sends the fact to `on_visit`: the veil's user is a member (U1: the veil changes
    hands) or expired (S4), a merge `merge` refuses (U1, T1), approved unifications
    waiting for the member (U5 saga, G2), contact data in the visit (U5: offered to
    leads), a channel with an MU limit (I17), a member that would grow past the size limit."""
    msg = fact.msg
    at = fact.at
    if user.type == "member" or settings.mu_budget is not None:
        return None
    if veil_expired(user, veil, at):
        return None  # S4: the veil is released, the member gets a new veil of its own
    if not (member.type == "member" and user.alive and member.alive and user.channel_id == member.channel_id):
        return None  # merge() refuses it (U1, T1)
    if d.pending_for(member.channel_id, member.id):
        return None  # U5: the login fires the unifications waiting for it (saga.on_member_login)
    check_member_hash(settings, member_id, msg.memberHash)  # H1: a refusal raises here
    values = _visit_values(msg, settings, True, at)  # P2: a bad value raises here
    if EMAIL in values or MOBILE in values:
        return None  # U5: saga.offer_to_leads offers the member to the leads holding them
    platform: PlatformName
    if fact.type == "boot":
        platform = "mobile" if msg.platform == "mobile" else "web"
    else:  # S1: a login counts for the platform of that veil's session
        platform = veil_platform(user, veil)

    husk, merged, record = merge(user, member, at, fact.event_id)  # new states: nothing stored moved
    record_visit(merged, veil, platform, at)
    if fact.type == "boot":
        _record_boot(merged, msg, platform)
    set_values(merged, values)  # a member: profile.promote has nothing to do (C2)
    merged.last_login_at = max(merged.last_login_at or at, at)  # saga.on_member_login, no one waiting
    if user_chars(merged) > limits.MAX_USER_CHARS:
        return None  # on_visit refuses it when it grew (limits.check_user_size); the husk is smaller than any user

    # Nothing below can fail.
    d.put(husk)  # U8: no keys any more; its veils go to the member
    d.put(merged)
    outcome = Outcome()
    outcome.publications = publish(user, husk, fact.event_id, at, messages=messages)[1]
    outcome.publications.extend(publish(member, merged, fact.event_id, at, messages=messages)[1])
    outcome.merges += (record,)
    return outcome


def _visit_values(msg: Any, settings: ChannelSettings, is_member: bool, at: int) -> dict[str, Value]:
    """The profile values and name a visit sets, as `on_visit` reads them (P1–P4; a
    member's are qualified member data, U3, C4). A bad value raises (P2)."""
    profile = msg.profile
    values = profile_values(profile, settings, qualified=is_member, member=is_member, at=at) if profile else {}
    if (name := msg.name) is not None:
        values["name"] = new_value(name, is_member, is_member, at)
    return values


def _first_visit(d: Directory, fact: Fact, veil: str, values: dict[str, Value]) -> Outcome | None:
    """A boot on a veil no user holds, without memberId: a new anonymous user (S1, S2),
    which is not published (C1) and counts for no MU limit (I17)."""
    msg = fact.msg
    user = _new_anonymous(d, fact.channel_id, veil, fact.at)
    if d.get(user.id) is not None:
        return None  # both ids of the veil taken: on_visit replaces that user
    platform: PlatformName = "mobile" if msg.platform == "mobile" else "web"
    record_visit(user, veil, platform, fact.at)
    if (sent := msg.device) is not None:  # record_device on a user with none yet: the fields sent, in its order (S2)
        fields = device_values(sent.as_tuple)
        device: dict[str, str] = {}
        for i in range(len(DEVICE_KEYS)):
            value = fields[i]
            if value is not None:
                device[DEVICE_KEYS[i]] = value
        (user.mobile if platform == "mobile" else user.web).device = device
    user.language, user.city, user.country = msg.language or None, msg.city or None, msg.country or None
    set_values(user, values)
    if user_chars(user) > limits.MAX_USER_CHARS:
        return None  # on_visit refuses it (user_too_large)
    d.put(user)
    return Outcome()


@handles_plainly("chat")
def plain_chat(d: Directory, fact: Fact, settings: ChannelSettings, messages: bool) -> Outcome | None:
    """`on_chat` for a chat from a veil a user holds — its last contact moves, an
    anonymous user becomes a lead (C2), and the contact data the chat carries is set as
    any value is (C4: qualified from a phone call or an e-mail; P3: where it wins) — or
    from a veil no one holds with nothing to attach it to (D1): a new lead holding the
    contact the chat carried. None sends the fact to `on_chat`: a help-desk match or a
    blocked customer's contact (D1, B1), an anonymous user published once, a new MU in a
    channel with a limit (I17), a masked user whose message would move (I17), a user
    past the size limit."""
    msg = fact.msg
    ch, at = fact.channel_id, fact.at
    veil = clean_veil_id(msg.veilId)  # G1: refusals raise here, before any change
    contacts = _chat_contacts(msg)
    user = d.by_veil(ch, veil)
    if user is None:
        return _first_chat(d, fact, settings, veil, contacts, messages)
    promoted = user.type == "anonymous"
    if promoted and (user.version > 0 or settings.mu_budget is not None):
        return None
    old_fields = user.fields
    won: dict[str, Value] = {}
    if contacts:  # on_chat's set_values, decided first (C4, P3)
        qualified, is_member = msg.medium in QUALIFIED_MEDIA, user.type == "member"
        for key, value in contacts.items():
            new = new_value(value, qualified, is_member, at)
            if update_wins(key, new, old_fields.get(key)):
                won[key] = new
        if won:
            if user.masked and user.version > 0:
                return None  # I17: publication.publish decides what a masked user's message shows
            user.fields = {**old_fields, **won}
            if user_chars(user) > limits.MAX_USER_CHARS:
                user.fields = old_fields
                return None  # on_chat refuses it (user_too_large)

    # Nothing below can fail. The veil is held already: of the identities, only the
    # contacts that won may move.
    user.last_contact_at = max(user.last_contact_at or at, at)
    if promoted:
        user.type = "lead"  # C2
    if won:
        d.put(user)
    else:
        d.touched(user)
    # A lead never published gets its first message (`created`); else the contacts shown.
    keys = [key for key, new in won.items() if _shown_value(old_fields.get(key)) != new.v]
    if won and _qualified(old_fields) != _qualified(user.fields):
        keys.append("qualified")
    return Outcome(publications=_publish(user, keys, fact, messages), activities=(_chat_activity(fact, user),))


def _first_chat(
    d: Directory, fact: Fact, settings: ChannelSettings, veil: str, contacts: dict[str, str], messages: bool,
) -> Outcome | None:
    """A chat from a veil no one holds: a new lead (C2) on that veil, unless the help
    desk attaches it to a customer (D1)."""
    msg = fact.msg
    if settings.mu_budget is not None:
        return None  # I17: a new MU, maybe masked
    key = MOBILE if msg.medium == "phone" else EMAIL
    value = None if msg.medium in EXTERNAL_MEDIA else contacts.get(key)
    if value is not None and d.by_contact(fact.channel_id, "mobile" if key == MOBILE else "email", value, qualified_only=True):
        return None  # D1: _help_desk_match attaches it (or B1 refuses it)
    qualified = msg.medium in QUALIFIED_MEDIA
    user = _new_anonymous(d, fact.channel_id, veil, fact.at)
    if d.get(user.id) is not None:
        return None  # both ids of the veil taken: on_chat replaces that user
    user.veils[veil] = user.last_contact_at = fact.at
    user.fields = {key: new_value(value, qualified, False, fact.at) for key, value in contacts.items()}
    user.type = "lead"
    if user_chars(user) > limits.MAX_USER_CHARS:
        return None  # on_chat refuses it (user_too_large)
    d.put(user)
    return Outcome(publications=_publish(user, [], fact, messages), activities=(_chat_activity(fact, user),))


def _chat_activity(fact: Fact, user: User) -> Activity:
    msg = fact.msg
    body = {"chatId": msg.chatId, "medium": msg.medium}
    if (message := msg.message) is not None:
        body.update(messageId=message.messageId, text=message.text)
    body["authorName"] = user.value("name") or user.value("profile.name")  # U4: kept as written
    return Activity(fact.channel_id, user.id, "chat", fact.event_id, fact.at, body)


@handles_plainly("contact")
def plain_contact(d: Directory, fact: Fact, settings: ChannelSettings, messages: bool) -> Outcome | None:
    """`on_contact`: contact data typed by the visitor (C4: unqualified; U9: never
    unifies) on its veil's user, or on a new anonymous user, either made a lead (C2).
    None sends the fact to `on_contact`: a masked user whose message would move (I17),
    a new MU in a channel with a limit, a user that would grow past the size limit."""
    msg = fact.msg
    ch, at = fact.channel_id, fact.at
    veil = clean_veil_id(msg.veilId)  # G1: refusals raise here, before any change
    user = d.by_veil(ch, veil)
    is_member = user is not None and user.type == "member"
    values: dict[str, Value] = {}
    if msg.email is not None:
        values[EMAIL] = new_value(clean_email(msg.email), False, is_member, at)
    if msg.mobileNumber is not None:
        values[MOBILE] = new_value(clean_mobile(msg.mobileNumber), False, is_member, at)
    created = user is None
    if user is None:
        user = _new_anonymous(d, ch, veil, at)
        if d.get(user.id) is not None:
            return None  # both ids of the veil taken: on_contact replaces that user
        user.veils[veil] = at
    old_fields = user.fields
    won = {key: new for key, new in values.items() if update_wins(key, new, old_fields.get(key))}  # C4
    new_fields = {**old_fields, **won} if won else old_fields
    promoted = user.type == "anonymous" and any(
        (got := new_fields.get(key)) is not None and got.v is not None for key in CONTACT_KEYS)  # C2
    if promoted and settings.mu_budget is not None:
        return None  # I17: a new MU, maybe masked
    if user.masked and user.version > 0 and (won or promoted):
        return None  # I17: publication.publish decides what a masked user's message shows
    user.fields = new_fields
    if (won or created) and user_chars(user) > limits.MAX_USER_CHARS:
        user.fields = old_fields
        return None  # on_contact refuses it (user_too_large)

    # Nothing below can fail.
    user.last_contact_at = max(user.last_contact_at or at, at)
    if promoted:
        user.type = "lead"
    if won or created:
        d.put(user)  # its contact keys (identities) moved
    else:
        d.touched(user)
    # Typed contact data is unqualified and never replaces a qualified value (C4,
    # priority.update_wins): the view's `qualified` cannot move here.
    keys = [key for key, new in won.items() if _shown_value(old_fields.get(key)) != new.v]
    if promoted:
        keys.append("type")
    return Outcome(publications=_publish(user, keys, fact, messages))


@handles_plainly("track")
def plain_track(d: Directory, fact: Fact, settings: ChannelSettings, messages: bool) -> Outcome | None:
    """`on_track`: a behaviour event changes no user; a veil no one holds gets a new
    anonymous user (C1: not published). None: on_track, for a new user past the size
    limit (refused), or a veil whose ids are both taken."""
    msg = fact.msg
    ch, at = fact.channel_id, fact.at
    veil = clean_veil_id(msg.veilId)  # G1: a refusal raises here, before any change
    user = d.by_veil(ch, veil)
    if user is None:
        user = _new_anonymous(d, ch, veil, at)
        if d.get(user.id) is not None:
            return None
        user.veils[veil] = at
        if user_chars(user) > limits.MAX_USER_CHARS:
            return None
        d.put(user)
    body = {"name": msg.name, "properties": msg.properties}
    return Outcome(activities=(Activity(ch, user.id, "event", fact.event_id, at, body),))


def _offered(d: Directory, member: User, fields: dict[str, Value]) -> bool:
    """Would saga.offer_to_leads note `member` on another user, one holding a qualified
    contact of `fields` (U5)?"""
    for key, kind in ((EMAIL, "email"), (MOBILE, "mobile")):
        val = fields.get(key)
        if val is None or val.v is None or not val.q:
            continue
        for other in d.by_contact(member.channel_id, kind, val.v, qualified_only=True):
            if other is not member and other.type != "member" and other.alive and member.id not in other.offered:
                return True
    return False


def _qualified(fields: dict[str, Value]) -> list[str]:
    """The contact keys the view lists as `qualified` (C4)."""
    return [key for key in CONTACT_KEYS if (val := fields.get(key)) is not None and val.v is not None and val.q]


def _shown_value(value: Value | None) -> Any:
    """What the view shows of a field: its value, None when absent."""
    return None if value is None else value.v


def _publish(user: User, keys: list[str], fact: Fact, messages: bool) -> list[Publication]:
    """publication.publish for a plain path's user, whose changed keys it knows
    (`keys`, in any order; never `blocked`): nothing for an anonymous user (C1); for one
    never published, its first message (`created`, built by publish); else an `updated`
    naming `keys`, or nothing when there are none (activity within a session is quiet).
    The version and updatedAt move as publish moves them, with messages or not."""
    if user.type == "anonymous":
        return []
    if user.version == 0:  # publish moves a user it has no old state of in place
        return publish(None, user, fact.event_id, fact.at, messages=messages)[1]
    if not keys:
        return []
    keys.sort()  # as publication.changed_keys sorts them
    user.version += 1
    user.updated_at = max(user.updated_at, fact.at)
    if not messages:
        return []
    body = message_body(user, user.version, "updated", keys, fact.event_id, fact.at)
    return [Publication(f"{user.channel_id}:{user.id}", body)]
