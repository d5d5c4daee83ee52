"""The projection's loading keys of an SDK fact (issue 14 item 2: ids and keys computed
once per fact). `batch._keys_of` reads an SDK fact's own fields (`_sdk_keys`) instead of
asking every fact for every field any type may have; both readings must name the same
users and identity keys, or a batch would run the core without a user it needs."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.projection_bench import Stream
from contracts.inbound import parse_inbound
from services.domain.core import Fact
from services.projection import batch, facts
from services.projection.decoding import decode_inbound
from tests.unit.test_core_differential import Builder, _sdk_streams, _streams


def _general(fact: Fact) -> Any:
    """`_keys_of` as it reads a command: every field any fact type may have (an import
    row has its own reading, pinned below)."""
    if fact.msg.type == "import.row":
        return facts._import_row_keys(fact.msg, fact.channel_id)
    return facts._general_keys(fact.msg, fact.channel_id)


def test_the_bench_stream_loads_the_same_keys_both_ways() -> None:
    """Both decoders' messages (msgspec structs and pydantic models) of the bench's SDK
    stream: visits with members and profiles, chats with contacts, contact forms."""
    for _channel, _event, raw in Stream(3).events(3_000):
        for msg in (decode_inbound("sdk-events", raw), parse_inbound("sdk-events", raw)):
            fact = Fact(msg, msg.occurredAt)
            assert batch._keys_of(fact) == _general(fact)


@settings(max_examples=60, deadline=None)
@given(st.one_of(_sdk_streams, _streams))
def test_generated_streams_load_the_same_keys_both_ways(stream: list[Any]) -> None:
    """The differential test's facts (placeholders, invalid contacts, profiles with
    non-text contact values, every fact type)."""
    builder = Builder()
    for channel, gap, step, _pick in stream:
        for msg in builder.facts(channel, gap, step, []):
            fact = Fact(msg, msg.occurredAt)
            assert batch._keys_of(fact) == _general(fact)


def _import_row_keys_as_before(fact: Fact) -> Any:
    """`_keys_of` of an import row as session 9 read it, through the general reading's
    `add` closure (the reference `_import_row_keys` must equal)."""
    from services.domain.hygiene import clean_email, clean_member_id, clean_mobile
    from services.domain.ids import member_user_id
    from services.domain.values import Rejected

    msg, ch = fact.msg, fact.channel_id
    ids: set[str] = set()
    keys: set[tuple[str, str, str]] = set()

    def add(kind: str, raw: Any, clean: Any) -> str | None:
        if not isinstance(raw, str):
            return None
        try:
            value = clean(raw)
        except Rejected:
            return None
        keys.add((ch, kind, value))
        return value  # type: ignore[no-any-return]

    cells = msg.cells
    if (member := add("member", cells.get("memberId"), clean_member_id)) is not None:
        ids.add(member_user_id(ch, member))
    add("email", cells.get("profile.email"), clean_email)
    add("mobile", cells.get("profile.mobileNumber"), clean_mobile)
    return ids, keys


_CELL = st.one_of(
    st.sampled_from(["", " ", "M001", " M001 ", "m-2", "null", "unknown", "a@example.com", " A@Example.COM ",
                     "not an e-mail", "+819012345678", "+81 090-1234-5678", "09012345678", "x" * 300]),
    st.text(max_size=12),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["memberId", "profile.email", "profile.mobileNumber", "name", "email"]), _CELL))
def test_an_import_row_loads_its_mapped_keys_as_before(cells: dict[str, str]) -> None:
    """I5 (a row's cells are keyed by the mapped key) and issue 14 session 10: an import
    row's loading keys are read by `_import_row_keys`, without the general reading's
    closure; the memberId, e-mail and mobile cells that clean are its keys (placeholders,
    blanks and invalid values skipped), and a memberId's imported user id its id. A key
    missed here would let the core decide a row without the user holding it."""
    import orjson

    from services.projection.decoding import decode_import_rows

    raw = orjson.dumps({"channelId": "ch_keys", "occurredAt": 1, "eventId": "imp_k:rows:2", "type": "import.rows",
                        "importId": "imp_k", "rows": [{"rowNumber": 2, "cells": cells}]})
    for row in decode_import_rows(raw) or []:
        if isinstance(row, Exception):
            continue  # a cell the door refuses (I15: the row fails before loading)
        fact = Fact(row, 1)
        assert batch._keys_of(fact) == _import_row_keys_as_before(fact)
        # What the loaders read: `add_keys` adds a row's keys in place (issue 14, session 18).
        ids: set[str] = set()
        keys: set[Any] = set()
        facts.add_keys([fact], ids, keys)
        assert (ids, keys) == _import_row_keys_as_before(fact)


def test_an_import_rows_member_email_and_mobile_are_loaded_cleaned() -> None:
    """The keys themselves, cleaned as the core cleans them (I4, I9): a memberId trimmed,
    an e-mail lowercased, a mobile in E.164; the member's user id from its memberId."""
    import orjson

    from services.domain.ids import member_user_id
    from services.projection.decoding import decode_import_rows

    raw = orjson.dumps({"channelId": "ch_keys", "occurredAt": 1, "eventId": "imp_k:rows:2", "type": "import.rows",
                        "importId": "imp_k", "rows": [{"rowNumber": 2, "cells": {
                            "memberId": " M7 ", "profile.email": "Ann@Example.COM",
                            "profile.mobileNumber": "+81 090-1234-5678", "name": "Ann"}}]})
    (row,) = decode_import_rows(raw) or []
    ids, keys = batch._keys_of(Fact(row, 1))
    assert keys == {("ch_keys", "member", "M7"), ("ch_keys", "email", "ann@example.com"),
                    ("ch_keys", "mobile", "+819012345678")}
    assert ids == {member_user_id("ch_keys", "M7")}


def test_add_keys_adds_every_facts_keys_to_the_loaders_sets() -> None:
    """`facts.add_keys` (the loaders' first round, compiled; issue 14 session 11) adds the
    union of each fact's `_keys_of` to the sets it is handed, keeping what they held."""
    facts_ = [Fact(msg, msg.occurredAt) for _c, _e, raw in Stream(5).events(500)
              for msg in [decode_inbound("sdk-events", raw)]]
    seed_ids, seed_keys = {"u-already"}, {("c", "email", "already@example.com")}
    ids, keys = set(seed_ids), set(seed_keys)
    facts.add_keys(facts_, ids, keys)
    want_ids, want_keys = set(seed_ids), set(seed_keys)
    for fact in facts_:
        f_ids, f_keys = batch._keys_of(fact)
        want_ids |= f_ids
        want_keys |= f_keys
    assert len(want_ids) > 100 and len(want_keys) > 100  # the stream names many users
    assert (ids, keys) == (want_ids, want_keys)


def test_remembered_keys_are_the_keys_derived_again_even_past_the_memos_size() -> None:
    """issue 14 session 14: an SDK fact's veil, memberId and contact keys (and the veil's
    and member's user ids) are remembered per channel and raw text (`facts._KEYS`), so a
    visitor's later facts take them without cleaning and hashing. Pure functions of the
    text: every fact's keys, read with the memo warm, cold, and after it was emptied for
    being full (more distinct veils than `_MEMO_SIZE`), are the general reading's, which
    cleans and derives each anew."""
    from services.domain.hygiene import clean_veil_id
    from services.domain.ids import veil_user_id

    facts_ = [Fact(msg, msg.occurredAt) for _c, _e, raw in Stream(11).events(1_500)
              for msg in [decode_inbound("sdk-events", raw)]]
    for _round in range(2):  # cold (for this stream), then warm
        for fact in facts_:
            assert batch._keys_of(fact) == _general(fact)
    memo = facts._KEYS
    for i in range(facts._MEMO_SIZE + 10):  # distinct veils: the memo empties itself once
        memo.veil("ch_full", f" v{i} ")
    assert memo.size <= facts._MEMO_SIZE
    assert memo.veil("ch_full", " v7 ") == (("ch_full", "veil", clean_veil_id(" v7 ")), veil_user_id("ch_full", "v7"))
    for fact in facts_:
        assert batch._keys_of(fact) == _general(fact)
    # A refused identifier is not remembered: refused (skipped) every time.
    assert memo.veil("ch_full", "undefined") is None and memo.veil("ch_full", "undefined") is None
    assert memo.member("ch_full", " null ") is None and memo.contact("ch_full", "email", "not-an-email") is None
