"""Name-based ids (docs/decisions.md, Determinism; ids version 2 of contract 1.1.0)."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.domain.ids import encode_parts, fact_user_id, member_user_id, veil_user_id

_V1_NAMESPACE = uuid.UUID("5b0c6f5e-3d0a-4a8e-9a51-6e1f0c2d7a11")


def test_ids_v2_parts_holding_the_old_separator_no_longer_derive_another_inputs_id():
    """Version 1 joined parts with U+001F: a veilId `v\\x1f5` gave the id of the user
    created on veil `v` at time 5, and a memberId `m\\x1f5` that of member `m` re-created
    at time 5 (B3). The encoding is unambiguous now."""
    assert veil_user_id("ch", "v\x1f5") != veil_user_id("ch", "v", 5)
    assert member_user_id("ch", "m\x1f5") != member_user_id("ch", "m", 5)
    assert veil_user_id("ch\x1fveil", "x") != veil_user_id("ch", "veil\x1fx")
    assert fact_user_id("a\x1ffact", "b") != fact_user_id("a", "fact\x1fb")


def test_ids_v2_ordinary_ids_are_the_version_1_ids():
    """Parts without U+001F keep their ids: no rebuild needed to keep them (operations.md)."""
    assert veil_user_id("ch_1", "veil-1") == "u_" + uuid.uuid5(_V1_NAMESPACE, "ch_1\x1fveil\x1fveil-1").hex
    assert member_user_id("ch_1", "m-1", 7) == "u_" + uuid.uuid5(_V1_NAMESPACE, "ch_1\x1fmember\x1fm-1\x1f7").hex
    assert fact_user_id("ch_1", "ev-1") == "u_" + uuid.uuid5(_V1_NAMESPACE, "ch_1\x1ffact\x1fev-1").hex


_PART = st.text(alphabet=st.sampled_from("ab\x1f:1é"), max_size=6)


@given(st.lists(_PART, min_size=1, max_size=4), st.lists(_PART, min_size=1, max_size=4))
def test_ids_v2_encoding_is_injective(a: list[str], b: list[str]):
    assert (encode_parts(*a) == encode_parts(*b)) == (a == b)


@given(_PART, _PART, _PART, _PART)
def test_ids_v2_distinct_member_inputs_give_distinct_ids(ch1: str, m1: str, ch2: str, m2: str):
    if (ch1, m1) != (ch2, m2):
        assert member_user_id(ch1, m1) != member_user_id(ch2, m2)


@given(st.text(max_size=40) | st.just("u_0123abcd") | st.just("u\x1f1"), st.integers(1, 10**6))
def test_an_outbound_event_id_is_the_name_based_id_of_its_user_and_version(user_id: str, version: int):
    """Every user-changed carries an eventId derived from (user, version) (Determinism):
    the name built directly for a user id without U+001F (issue 14, session 13) gives
    the id the generic parts encoding gives, which for such ids is version 1's uuid5."""
    from services.domain.ids import _name_uuid, outbound_event_id

    assert outbound_event_id(user_id, version) == _name_uuid("user-changed", user_id, str(version))
    if "\x1f" not in user_id:
        assert outbound_event_id(user_id, version) == uuid.uuid5(_V1_NAMESPACE, f"user-changed\x1f{user_id}\x1f{version}").hex


# -- issue 14, session 15: ids remembered in plain dicts, names built directly -----------

_ANY_PART = st.text(max_size=12) | st.sampled_from(["", "v\x1f", "\x1f", "ch_1", "u_0123abcd"])


@given(st.lists(st.tuples(st.sampled_from(["veil", "member"]), _ANY_PART, _ANY_PART,
                          st.none() | st.integers(0, 2**63)), min_size=1, max_size=12),
       st.integers(0, 3))
def test_remembered_ids_are_the_oracles_ids_even_past_the_memos_size(calls: list[Any], near_full: int) -> None:
    """Determinism (replay derives the same ids; ids version 2): `veil_user_id` and
    `member_user_id`, remembered per channel and text in plain dicts and named without
    `_name`'s generic steps, give the ids of the oracle (tests/oracle/ids.py, the
    derivation before), cold, warm, and across the memo emptying itself when full; a
    part holding U+001F still takes the length-prefixed encoding."""
    from services.domain import ids
    from tests.oracle import ids as oracle

    ids.forget()
    ids._IDS.size = ids._REMEMBERED - near_full  # the memo empties itself within the stream
    for _round in range(2):  # cold, then warm (and past the emptying)
        for kind, ch, text, since in calls:
            new = ids.veil_user_id if kind == "veil" else ids.member_user_id
            old = oracle.veil_user_id if kind == "veil" else oracle.member_user_id
            assert new(ch, text, since) == old(ch, text, since)
            assert new(ch, text) == old(ch, text)
    assert ids._IDS.size <= ids._REMEMBERED
    ids.forget()


@given(st.text(max_size=40) | st.sampled_from(["u_0123abcd", "u\x1f1"]), st.integers(0, 10**12))
def test_an_outbound_event_id_is_the_oracles(user_id: str, version: int) -> None:
    """Determinism: the eventId of every user-changed (its name built as one string,
    issue 14, session 15) is the one the oracle derives for (user, version)."""
    from services.domain.ids import outbound_event_id
    from tests.oracle.ids import outbound_event_id as oracle_event_id

    assert outbound_event_id(user_id, version) == oracle_event_id(user_id, version)
