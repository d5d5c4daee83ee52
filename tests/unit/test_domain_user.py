"""The user aggregate's plumbing: copies and serialisation lose nothing, and the
publication pre-check sees every key the view shows."""

from __future__ import annotations

from dataclasses import fields, replace

from services.domain import publication
from services.domain.user import Platform, User, Value


def _full_user() -> User:
    return User(
        id="u_1", channel_id="ch", type="member", created_at=1, updated_at=2, member_id="m",
        fields={"name": Value("Taro", True, True, 3)}, tags=["a"], import_tags=["i"],
        unsubscribe_email=True, unsubscribe_texting=True, has_push_token=True, blocked=True,
        masked=True, deleted=False, merged_into=None, language="ja", city="Tokyo", country="JP",
        sessions_count=4, last_seen_at=5, last_activity_at=6, last_contact_at=7,
        web=Platform(2, 5, {"browser": "chrome"}), mobile=Platform(2, 4, {"appVersion": "1"}),
        veils={"v": 5}, booted=True, delivered=["c"], merged_user_ids=["u_0"], offered=["u_9"],
        pending_into="u_8", pending_since=8, last_login_at=9, version=10, mobile_veils=["v"],
    )


def test_copy_keeps_every_field_and_shares_no_mutable_state() -> None:
    user = _full_user()
    copied = user.copy()
    assert copied == user
    for f in fields(User):
        value = getattr(user, f.name)
        if isinstance(value, list | dict | Platform):
            assert getattr(copied, f.name) is not value, f.name


def test_json_round_trip_keeps_every_field() -> None:
    user = _full_user()
    assert User.from_json(user.to_json()) == user


def test_json_without_a_newer_field_reads_with_its_default() -> None:
    raw = _full_user().to_json()
    del raw["last_login_at"], raw["version"]
    assert User.from_json(raw) == replace(_full_user(), last_login_at=None, version=0)


def test_json_has_every_field_in_field_order() -> None:
    """The stored form (and so the digest) is one key per field, in declaration order."""
    assert list(_full_user().to_json()) == [f.name for f in fields(User)]


def test_publication_precheck_notices_every_visible_field() -> None:
    """The cheap pre-check in `publish` must not hide a change the view would show."""
    user = replace(_full_user(), masked=False, blocked=False)
    quiet = {"last_seen_at", "last_activity_at", "last_contact_at", "updated_at", "version", "veils",
             "booted", "offered", "pending_into", "pending_since", "last_login_at", "has_push_token", "mobile_veils",
             "deleted", "merged_into"}
    changes = {
        "type": "lead", "masked": True, "member_id": "m2", "fields": {}, "tags": [], "import_tags": [],
        "unsubscribe_email": False, "unsubscribe_texting": False, "blocked": True, "language": "en",
        "city": None, "country": None, "sessions_count": 9, "created_at": 0, "delivered": [],
        "merged_user_ids": [], "id": "u_2", "channel_id": "c2",
        "web": Platform(3, 5, {"browser": "chrome"}), "mobile": Platform(2, 4, {}),
    }
    assert set(changes) | quiet == {f.name for f in fields(User)}
    for name, value in changes.items():
        assert publication._visible(user) != publication._visible(replace(user, **{name: value})), name
