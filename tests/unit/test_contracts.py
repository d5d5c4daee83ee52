"""Pins the external contract (docs/contract.md) as the `contracts` package implements it."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from contracts import CONTRACT_VERSION
from contracts.export import stale
from contracts.inbound import MODELS, InboundError, parse_inbound
from contracts.outbound import DeadLetter, MergedUserRef, UserChanged, UserShow, UserView
from contracts.topics import INBOUND_KINDS, InboundKind, Topics

ENVELOPE = {"eventId": "7f0c1d2e", "channelId": "ch_1", "occurredAt": 1746316800000}

# One valid message per wire type, as docs/contract.md describes them, optional fields filled.
EXAMPLES: dict[str, dict[str, Any]] = {
    "boot": {
        "veilId": "v_1",
        "platform": "web",
        "memberId": "m_1",
        "memberHash": "9f86d081884c7d65",
        "device": {
            "browser": "chrome",
            "browserName": "Chrome",
            "os": "mac",
            "osName": "macOS",
            "device": "desktop",
            "appName": "shop",
            "appVersion": "1.2.3",
        },
        "language": "ja",
        "city": "Tokyo",
        "country": "JP",
        "profile": {"email": "a@b.jp", "points": 120, "rate": 1.5, "vip": True, "t": ["a"]},
        "name": "Taro",
    },
    "login": {"veilId": "v_1", "memberId": "m_1", "memberHash": "9f86", "profile": {}, "name": "T"},
    "chat": {
        "veilId": "line:U1234567890abcdef",
        "chatId": "chat_1",
        "medium": "phone",
        "message": {"messageId": "msg_1", "text": "hello"},
        "contact": {"mobileNumber": "+819012345678"},
    },
    "contact": {"veilId": "v_1", "email": "a@b.jp"},
    "track": {"veilId": "v_1", "name": "cart.add", "properties": {"sku": "A1", "qty": 2}},
    "profile.update": {
        "actor": "staff_1",
        "userId": "u_1",
        "profile": {"mobileNumber": "+819012345678", "scores": [1, 2.5], "nick": None},
        "name": "Taro",
        "tags": ["vip/gold"],
    },
    "member.upsert": {"actor": "api", "memberId": "m_1", "profile": {"email": "a@b.jp"}},
    "lead.create": {"actor": "api", "profile": {"mobileNumber": "+819012345678"}},
    "unification.approve": {"actor": "staff_1", "sourceUserId": "u_1", "targetUserId": "u_2"},
    "user.block": {"actor": "staff_1", "userId": "u_1"},
    "user.unblock": {"actor": "staff_1", "userId": "u_1"},
    "user.delete": {"actor": "system", "userId": "u_1"},
    "member.delete": {"actor": "api", "memberId": "m_1"},
    "marketing.delivered": {"actor": "system", "userId": "u_1", "campaignId": "cmp_1"},
    "unification.cancel": {"actor": "staff_1", "sourceUserId": "u_1"},
    "grade.define": {"actor": "staff_1", "name": "VIP", "colour": "#FFD700"},
    "grade.remove": {"actor": "staff_1", "name": "VIP"},
    "grade.assign": {"actor": "staff_1", "name": "VIP", "kind": "email", "value": "taro@example.jp"},
    "grade.unassign": {"actor": "staff_1", "name": "VIP", "kind": "memberId", "value": "m-1"},
    "lookup.define": {
        "actor": "admin_1", "name": "CRM", "url": "https://crm.example.jp/lookup", "method": "POST",
        "params": [{"label": "Member no.", "name": "memberNo", "required": True, "bind": "memberId"}],
        "results": [{"label": "Rank", "key": "rank"}], "connections": [{"result": "rank", "profileKey": "rank"}],
        "media": ["line"],
    },
    "lookup.remove": {"actor": "admin_1", "name": "CRM"},
    "lookup.result": {
        "actor": "system", "userId": "u_1", "name": "CRM", "status": "ok", "values": {"rank": "gold"},
        "fill": {"rank": "gold"},
    },
    "import.started": {
        "importId": "imp_1",
        "mode": "lead",
        "key": "email",
        "blank": "keep",
        "tag": "fair-2025",
        "actor": "staff_1",
        "fileName": "leads.csv",
        "columns": [
            {"column": "E-mail", "key": "profile.email", "type": None},
            {"column": "Points", "key": "profile.points", "type": "number"},
            {"column": "Unsubscribe", "key": "unsubscribeEmail", "type": None},
        ],
    },
    "import.row": {
        "importId": "imp_1",
        "rowNumber": 2,
        "cells": {"profile.email": " A@B.jp ", "profile.points": "1.01", "unsubscribeEmail": "no"},
    },
    "import.rows": {
        "importId": "imp_1",
        "rows": [
            {"rowNumber": 2, "cells": {"profile.email": " A@B.jp ", "unsubscribeEmail": "no"}},
            {"rowNumber": 3, "cells": {}, "rowError": "the row has 5 cells but the header names 4 columns"},
        ],
    },
    "import.finished": {"importId": "imp_1", "rows": 1, "abandoned": False},
}
KIND_OF = {wire: kind for kind, models in MODELS.items() for wire in models}


def message(wire_type: str, **changes: Any) -> dict[str, Any]:
    body = {**ENVELOPE, "type": wire_type, **copy.deepcopy(EXAMPLES[wire_type])}
    return {**body, **changes}


def parse(body: dict[str, Any]) -> Any:
    return parse_inbound(KIND_OF[body["type"]], orjson.dumps(body))


def rejection(body: dict[str, Any] | bytes, kind: InboundKind = "sdk-events") -> InboundError:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(InboundError) as caught:
        parse_inbound(kind, raw)
    return caught.value


# ------------------------------------------------------------------------------ inbound


def test_contract_every_inbound_type_has_an_example() -> None:
    assert set(EXAMPLES) == set(KIND_OF)
    assert list(MODELS["sdk-events"]) == ["boot", "login", "chat", "contact", "track"]
    # 1.1.0: unification.cancel, the four grade commands and the three lookup commands
    assert len(MODELS["commands"]) == 17


@pytest.mark.parametrize("wire_type", list(EXAMPLES))
def test_contract_valid_example_parses_unchanged(wire_type: str) -> None:
    body = message(wire_type)
    parsed = parse(body)
    assert type(parsed) is MODELS[KIND_OF[wire_type]][wire_type]
    # Values are kept as given: hygiene is the domain's job.
    assert parsed.model_dump(mode="json", exclude_unset=True) == body


def test_contract_optional_fields_may_be_omitted() -> None:
    minimal = {**ENVELOPE, "type": "boot", "veilId": "v_1", "platform": "mobile"}
    assert parse(minimal).memberId is None
    assert parse(message("chat", message=None, contact=None)).contact is None


def test_contract_envelope_example_of_contract_parses() -> None:
    boot = parse_inbound(
        "sdk-events",
        b'{"eventId": "7f0c\xe2\x80\xa6", "type": "boot", "channelId": "ch_1",'
        b' "occurredAt": 1746316800000, "veilId": "v_1", "platform": "web"}',
    )
    assert (boot.eventId, boot.occurredAt) == ("7f0c…", 1746316800000)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (message("boot", veil="v_1"), "veil"),
        (message("boot", device={"browser": "x", "gpu": "y"}), "device.gpu"),
        (message("chat", message={"messageId": "m", "html": "<b>"}), "message.html"),
        (message("user.block", reason="spam"), "reason"),
        (message("import.row", extra=1), "extra"),
    ],
)
def test_contract_unknown_field_is_rejected(body: dict[str, Any], path: str) -> None:
    error = rejection(body, KIND_OF[body["type"]])
    assert error.code == "invalid_fields"
    assert f"{path}: extra inputs are not permitted" in error.message


@pytest.mark.parametrize("occurred_at", ["1746316800000", True, False, 1.0, -1, 2**64 - 1, None])
def test_contract_occurred_at_must_be_a_non_negative_integer(occurred_at: Any) -> None:
    error = rejection(message("boot", occurredAt=occurred_at))
    assert error.code == "invalid_fields"
    assert error.message.startswith("occurredAt: ")


def test_contract_missing_and_ill_typed_fields_are_listed_compactly() -> None:
    body = message("boot", occurredAt="soon")
    del body["veilId"]
    error = rejection(body)
    assert error.code == "invalid_fields"
    assert error.message == "occurredAt: input should be a valid integer; veilId: field required"


def test_contract_strings_are_not_coerced() -> None:
    assert (
        rejection(message("boot", memberId=123)).message
        == "memberId: input should be a valid string"
    )
    assert rejection(message("import.row", rowNumber="2"), "import-rows").message.startswith(
        "rowNumber: "
    )


@pytest.mark.parametrize(
    "raw", [b"{", b"\xff\xfe{}", b"", b"[]", b'"boot"', b"null", b"42", b"NaN"]
)
def test_contract_bad_json_is_rejected(raw: bytes) -> None:
    assert rejection(raw).code == "bad_json"


def test_contract_tombstone_value_is_bad_json() -> None:
    assert rejection(None).code == "bad_json"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({**ENVELOPE, "type": "pageview", "veilId": "v_1"}, "sdk-events"),
        ({**ENVELOPE, "veilId": "v_1"}, "sdk-events"),
        ({**ENVELOPE, "type": 7}, "sdk-events"),
        ({**ENVELOPE, "type": None}, "commands"),
        (message("boot"), "commands"),
        (message("profile.update"), "import-rows"),
    ],
)
def test_contract_unknown_type_is_rejected(body: dict[str, Any], kind: InboundKind) -> None:
    error = rejection(body, kind)
    assert error.code == "unknown_type"
    assert error.message.startswith("type: ")


def test_contract_event_id_is_at_most_128_chars() -> None:
    assert parse(message("boot", eventId="e" * 128)).eventId == "e" * 128
    assert rejection(message("boot", eventId="e" * 129)).message.startswith("eventId: ")
    assert rejection(message("boot", eventId="")).code == "invalid_fields"


def test_contract_channel_id_is_non_empty_and_bounded() -> None:
    assert rejection(message("boot", channelId="")).message.startswith("channelId: ")
    assert rejection(message("boot", channelId="c" * 129)).message.startswith("channelId: ")


@pytest.mark.parametrize("field", ["platform", "medium"])
def test_contract_closed_enumerations_are_enforced(field: str) -> None:
    body = message("boot", platform="tv") if field == "platform" else message("chat", medium="fax")
    assert rejection(body).message.startswith(f"{field}: input should be ")


def test_contract_contact_event_needs_email_or_mobile_number() -> None:
    assert parse(message("contact", email=None, mobileNumber="+819012345678")).email is None
    error = rejection(message("contact", email=None))
    assert error.message == "at least one of email, mobileNumber is required"


def test_contract_chat_contact_needs_email_or_mobile_number() -> None:
    error = rejection(message("chat", contact={}))
    assert error.message == "contact: at least one of email, mobileNumber is required"


@pytest.mark.parametrize(
    "profile", [{}, {"name": "x"}, {"email": None}, {"mobileNumber": 819012345678}]
)
def test_contract_lead_create_needs_email_or_mobile_number(profile: dict[str, Any]) -> None:
    error = rejection(message("lead.create", profile=profile), "commands")
    assert error.code == "invalid_fields"
    assert error.message.startswith("profile: ")


def test_contract_lead_create_accepts_both_contacts() -> None:
    both = {"email": "a@b.jp", "mobileNumber": "+819012345678"}
    assert parse(message("lead.create", profile=both)).profile == both


@pytest.mark.parametrize("key", ["", ".email", "email.", "."])
def test_contract_profile_key_must_not_be_empty_or_start_or_end_with_a_dot(key: str) -> None:
    error = rejection(message("boot", profile={key: "x"}))
    assert error.message.startswith("profile[")
    assert "profile key should be non-empty" in error.message


def test_contract_profile_key_may_contain_an_inner_dot() -> None:
    assert parse(message("boot", profile={"a.b": 1})).profile == {"a.b": 1}


@pytest.mark.parametrize("value", [{"nested": 1}, ["a", 1], [True], [None], [[1]]])
def test_contract_profile_value_must_be_a_profile_type(value: Any) -> None:
    error = rejection(message("boot", profile={"x": value}))
    assert error.message == (
        "profile.x: input should be a string (at most 4096 characters), number, boolean, "
        "list of such strings, list of numbers or null"
    )


def test_contract_profile_values_keep_their_json_type() -> None:
    profile = {"s": "1", "i": 1, "f": 1.5, "b": False, "ls": ["1"], "ln": [1, 2.5], "n": None}
    parsed = parse(message("profile.update", profile=profile)).profile
    assert parsed == profile
    assert [type(v) for v in parsed.values()] == [type(v) for v in profile.values()]


def test_contract_import_row_number_counts_the_header_as_row_1() -> None:
    assert rejection(message("import.row", rowNumber=1), "import-rows").message.startswith(
        "rowNumber: input should be greater than or equal to 2"
    )


def test_contract_import_column_type_is_a_profile_type() -> None:
    columns = [{"column": "Birthday", "key": "profile.birthday", "type": "timestamp"}]
    error = rejection(message("import.started", columns=columns), "import-rows")
    assert error.message.startswith("columns[0].type: ")


def test_contract_import_finished_defaults_to_not_abandoned() -> None:
    body = message("import.finished")
    del body["abandoned"]
    assert parse(body).abandoned is False


def test_contract_error_report_is_capped() -> None:
    error = rejection(message("boot", **{f"x{i}": i for i in range(40)}))
    assert error.message.endswith("; and 30 more")


def test_contract_parsed_messages_are_frozen() -> None:
    parsed = parse(message("boot"))
    with pytest.raises(ValidationError):
        parsed.veilId = "other"


def test_contract_parse_inbound_refuses_an_unknown_topic_kind() -> None:
    with pytest.raises(KeyError):
        parse_inbound("user-changed", orjson.dumps(message("boot")))  # type: ignore[call-overload]


# ----------------------------------------------------------------------------- outbound

# The example of docs/contract.md; its placeholders ("lead|member", "created|…") resolved.
USER = {
    "id": "u_1", "channelId": "ch_1", "type": "lead", "memberId": None,
    "name": None, "tags": [], "userImportTags": [],
    "profile": {"email": "a@b.jp", "mobileNumber": "+819012345678"},
    "qualified": ["email"],
    "unsubscribeEmail": False, "unsubscribeTexting": False,
    "blocked": False, "masked": False,
    "language": "ja", "city": None, "country": "JP",
    "sessionsCount": 3, "lastSeenAt": 0, "createdAt": 0, "updatedAt": 0,
    "web": {"sessionsCount": 3, "lastSeenAt": 0, "browser": "chrome", "os": "mac"},
    "mobile": {"sessionsCount": 0, "lastSeenAt": None},
    "deliveredCampaigns": ["cmp_1"],
    "mergedUserIds": ["u_0"],
}  # fmt: skip
USER_CHANGED = {
    "eventId": "ev_1", "channelId": "ch_1", "userId": "u_1", "version": 7,
    "change": "updated",
    "changedKeys": ["profile.email", "memberId"],
    "causationId": "7f0c1d2e",
    "occurredAt": 1746316800000,
    "mergedInto": None,
    "user": USER,
}  # fmt: skip


def test_contract_user_changed_example_validates() -> None:
    changed = UserChanged.model_validate(USER_CHANGED)
    assert changed.user is not None and changed.user.web.browser == "chrome"
    dumped = orjson.loads(orjson.dumps(changed.model_dump(mode="json")))
    assert dumped["mergedInto"] is None  # always present, null unless merged
    assert dumped["user"]["mobile"]["lastSeenAt"] is None


def test_contract_merged_and_deleted_carry_a_null_user() -> None:
    merged = {**USER_CHANGED, "change": "merged", "mergedInto": "u_2", "user": None}
    assert UserChanged.model_validate(merged).mergedInto == "u_2"
    assert UserChanged.model_validate({**USER_CHANGED, "change": "deleted", "user": None})
    with pytest.raises(ValidationError, match="user is null exactly"):
        UserChanged.model_validate({**USER_CHANGED, "change": "deleted"})


def test_contract_merged_into_is_set_only_for_merged() -> None:
    with pytest.raises(ValidationError, match="mergedInto is set exactly"):
        UserChanged.model_validate({**USER_CHANGED, "mergedInto": "u_2"})
    with pytest.raises(ValidationError, match="mergedInto is set exactly"):
        UserChanged.model_validate({**USER_CHANGED, "change": "merged", "user": None})


def test_contract_user_changed_version_starts_at_1() -> None:
    with pytest.raises(ValidationError):
        UserChanged.model_validate({**USER_CHANGED, "version": 0})


def test_contract_anonymous_users_are_never_published() -> None:
    anonymous = {**USER, "type": "anonymous"}
    assert UserView.model_validate(anonymous).type == "anonymous"  # `unifier user show`
    with pytest.raises(ValidationError, match="anonymous users are never published"):
        UserChanged.model_validate({**USER_CHANGED, "user": anonymous})


def test_contract_masked_users_carry_no_personal_data() -> None:
    masked = {**USER, "masked": True, "profile": None, "name": None, "memberId": None}
    assert UserView.model_validate(masked).profile is None
    with pytest.raises(ValidationError, match="masked user"):
        UserView.model_validate({**USER, "masked": True})


def test_contract_user_object_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        UserView.model_validate({**USER, "score": 1})


def test_contract_user_show_prints_unification_and_merged_ids() -> None:
    shown = UserShow.model_validate(
        {**USER, "unification": {"candidates": ["u_9"], "pendingInto": None}}
    )
    assert shown.unification.candidates == ["u_9"]
    assert MergedUserRef(id="u_0", mergedInto="u_1").model_dump() == {
        "id": "u_0",
        "mergedInto": "u_1",
    }


def test_contract_dead_letter_example_validates() -> None:
    letter = DeadLetter.model_validate(
        {
            "sourceTopic": "identity.sdk-events",
            "partition": 0,
            "offset": 42,
            "key": "ch_1",
            "value": '{"type": "boot"}',
            "error": {"code": "invalid_member_hash", "message": "memberHash does not match"},
            "failedAt": 0,
        }  # fmt: skip
    )
    assert letter.error.code == "invalid_member_hash"
    assert "key" in letter.model_dump()


# ------------------------------------------------------------------------------- topics


def test_contract_topic_names_default_to_the_identity_prefix() -> None:
    topics = Topics()
    assert (
        (topics.sdk_events, topics.commands, topics.import_rows)
        == topics.inbound
        == (
            "identity.sdk-events",
            "identity.commands",
            "identity.import-rows",
        )
    )
    assert (topics.user_changed, topics.dead_letter) == (
        "identity.user-changed",
        "identity.dead-letter",
    )


def test_contract_topic_prefix_is_configurable_and_maps_back_to_a_kind() -> None:
    topics = Topics("t_42.")
    assert topics.commands == "t_42.commands"
    assert [topics.kind(name) for name in topics.inbound] == list(INBOUND_KINDS)
    with pytest.raises(ValueError):
        topics.kind("t_42.user-changed")


def test_contract_topic_prefix_must_be_a_legal_kafka_name() -> None:
    with pytest.raises(ValueError):
        Topics("bad prefix/")


# ---------------------------------------------------------------------- generated files


def test_generated_contract_files_are_current() -> None:
    assert stale() == [], "models changed: run `python -m contracts.export` and commit"


def test_contract_version_is_the_one_docs_contract_declares() -> None:
    """A change of the contract is documented and versioned: the version the code
    publishes (AsyncAPI, OpenAPI) is the one docs/contract.md declares in its first line
    and lists last under "Versions"."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "contract.md").read_text()
    assert text.splitlines()[0] == f"<!-- Contract version: {CONTRACT_VERSION}. Changes are listed under \"Versions\" at the end. -->"
    listed = re.findall(r"^- \*\*(\d+\.\d+\.\d+)\*\* —", text, flags=re.M)
    assert listed[-1] == CONTRACT_VERSION
