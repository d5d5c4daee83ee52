"""Rewritten for the compiled core in issue 14, session 15, held here to the oracle's
definitions (tests/oracle): the size a user is counted at (limits.user_chars, docs/
contract.md "Limits") and a boot's device fields read by index (S2), without generic
iteration; a visit's times set from one boxed event time (S1–S4)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.domain.limits import user_chars
from services.domain.sessions import DEVICE_KEYS, device_values, record_device, record_visit
from services.domain.user import Platform, User, Value, new_user
from tests.oracle.limits import user_chars as oracle_user_chars
from tests.oracle.sessions import record_device as oracle_record_device
from tests.oracle.sessions import record_visit as oracle_record_visit

_TEXT = st.text(max_size=8)
_VALUE = st.none() | _TEXT | st.booleans() | st.integers() | st.lists(_TEXT | st.integers(), max_size=3)
# Device fields are text (Platform.device: dict[str, str]; the compiled core checks it).
_DEVICE = st.dictionaries(st.sampled_from([*DEVICE_KEYS, "extra"]), _TEXT, max_size=4)


@st.composite
def _users(draw: st.DrawFn) -> User:
    user = new_user("u_1", "ch", draw(st.sampled_from(["anonymous", "lead", "member"])), 1, draw(st.none() | _TEXT))
    user.fields = draw(st.dictionaries(_TEXT, st.builds(Value, _VALUE, st.booleans(), st.booleans(), st.just(0)), max_size=4))
    user.tags, user.import_tags = draw(st.lists(_TEXT, max_size=3)), draw(st.lists(_TEXT, max_size=2))
    user.delivered, user.merged_user_ids = draw(st.lists(_TEXT, max_size=2)), draw(st.lists(_TEXT, max_size=2))
    user.offered, user.mobile_veils = draw(st.lists(_TEXT, max_size=2)), draw(st.lists(_TEXT, max_size=2))
    user.veils = draw(st.dictionaries(_TEXT, st.integers(0, 10), max_size=3))
    user.language, user.city, user.country = draw(st.none() | _TEXT), draw(st.none() | _TEXT), draw(st.none() | _TEXT)
    user.web, user.mobile = Platform(1, None, draw(_DEVICE)), Platform(0, None, draw(_DEVICE))
    return user


@settings(max_examples=500)
@given(_users())
def test_the_size_of_a_user_is_the_oracles_count(user: User) -> None:
    """user_too_large (contract "Limits"): every container counted by name, not by a loop
    over a tuple of them, gives the oracle's item-by-item count whatever the user holds
    (text, lists, numbers in profile values; device fields; empty containers)."""
    assert user_chars(user) == oracle_user_chars(user)  # type: ignore[arg-type]


@given(st.tuples(*[st.none() | _TEXT for _ in DEVICE_KEYS]), _DEVICE)
def test_s2_a_boots_device_fields_replace_the_previous_ones_as_the_oracle_records_them(
    sent: tuple[str | None, ...], had: dict[str, Any],
) -> None:
    """S2: the fields a boot sends replace the previous ones, the absent ones are kept —
    read by index over DEVICE_KEYS now, the same device as the oracle's zip."""
    new, old = new_user("u_1", "ch", "anonymous", 1), new_user("u_1", "ch", "anonymous", 1)
    new.mobile.device, old.mobile.device = dict(had), dict(had)
    record_device(new, "mobile", sent)
    oracle_record_device(old, "mobile", dict(zip(DEVICE_KEYS, sent, strict=True)))  # type: ignore[arg-type]
    assert new.mobile.device == old.mobile.device and list(new.mobile.device) == list(old.mobile.device)
    assert new.web.device == {}


@pytest.mark.parametrize("sent", [(), ("a",) * (len(DEVICE_KEYS) - 1), ("a",) * (len(DEVICE_KEYS) + 1)])
def test_a_device_of_another_length_raises_as_the_strict_zip_did(sent: tuple[str, ...]) -> None:
    """A device that is not one value per DEVICE_KEYS is a bug: it raises the ValueError
    `zip(DEVICE_KEYS, sent, strict=True)` raised (the fact is refused as internal_error
    with the same reason, never applied half)."""
    with pytest.raises(ValueError) as new:
        device_values(sent)
    with pytest.raises(ValueError) as old:
        list(zip(DEVICE_KEYS, sent, strict=True))
    assert str(new.value) == str(old.value)


_TIME = st.none() | st.integers(0, 10**13)


@given(st.lists(st.tuples(st.sampled_from(["v1", "v2", "v3"]), st.sampled_from(["web", "mobile"]), st.integers(0, 10**13)),
                min_size=1, max_size=6),
       _TIME, _TIME, _TIME, _TIME, st.dictionaries(st.sampled_from(["v1", "v2"]), st.integers(0, 10**13), max_size=2))
def test_s1_s4_a_visit_is_recorded_as_the_oracle_records_it(
    visits: list[Any], activity: int | None, seen: int | None, contact: int | None, web_seen: int | None,
    veils: dict[str, int],
) -> None:
    """S1 (sessions per user and per platform), S2 (lastSeenAt never moves back), S3/S4
    (each veil's last activity): `record_visit` with the times set from one boxed event
    time (issue 14, session 15) leaves the user exactly as the oracle's does, late facts
    and equal times included."""
    users = []
    for _ in range(2):
        user = new_user("u_1", "ch", "anonymous", 1)
        user.last_activity_at, user.last_seen_at, user.last_contact_at = activity, seen, contact
        user.web.last_seen_at, user.veils = web_seen, dict(veils)
        users.append(user)
    new, old = users
    for veil, platform, at in visits:
        record_visit(new, veil, platform, at)
        oracle_record_visit(old, veil, platform, at)  # type: ignore[arg-type]
        assert new.to_json() == old.to_json() and list(new.veils) == list(old.veils)


def test_issue14_an_outcomes_rare_fields_are_empty_tuples_unless_filled() -> None:
    """Issue 14, session 17: an Outcome builds no list for its rarely filled fields (a
    tuple, `()` by default); a handler adds to them, and the publications stay a list."""
    from services.domain.core import Outcome

    out = Outcome()
    assert (out.merges, out.activities, out.notices, out.erased, out.grades, out.lookups) == ((),) * 6
    assert out.publications == [] and out.rejection is None
    out.erased += ("u_1",)
    out.erased += ("u_2",)
    assert out.erased == ("u_1", "u_2") and Outcome().erased == ()
