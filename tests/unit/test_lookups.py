"""External lookups (issue 15, seed 004 §2) in pure code: the core's handling of
definitions and answers, the address guard, the payload crypto, the breaker, the rate
limit and the parameter rules. The HTTP calls themselves are tested against a real
server in tests/integration/test_lookups.py."""

from __future__ import annotations

import base64
import ipaddress

import pytest

from contracts.inbound import InboundError, parse_inbound
from services.domain.channel import ChannelSettings
from services.lookup import crypto
from services.lookup.breaker import Breaker
from services.lookup.client import bound_params, check_params, connected_fill, result_values
from services.lookup.guard import AddressPolicy, parse_networks
from services.lookup.rate import RateLimit

from .domain_support import CH, MIN, T0, World

DEFINITION = {
    "url": "https://crm.example.jp/lookup", "method": "POST", "encrypted": False, "wrappedKey": None,
    "params": [
        {"label": "Member no.", "name": "memberNo", "required": True, "maxLength": 8, "bind": "memberId"},
        {"label": "E-mail", "name": "mail", "required": False, "maxLength": 254, "bind": "email"},
    ],
    "results": [{"label": "Rank", "key": "rank"}, {"label": "Since", "key": "account.since"}, {"label": "Tags", "key": "tags"}],
    "connections": [{"result": "rank", "profileKey": "rank"}, {"result": "account.since", "profileKey": "since"}],
    "media": ["line"], "vouched": False,
}


def result(w: World, user_id: str, at: int, **fields: object) -> object:
    body = {"userId": user_id, "name": "CRM", "status": "ok", "actor": "system", **fields}
    return w.ok("lookup.result", at, **body)


# -- the core ------------------------------------------------------------------------


def test_lookup_result_fills_only_empty_fields_unqualified_and_records_what_it_did():
    """Seed 004 §2-2 (フィールド接続): connected values fill fields with no value yet; a value
    already there stays; unqualified (C4) unless vouched; the record names the lookup."""
    w = World()
    member = w.upsert_member("m-1", T0, city="Tokyo")
    out = result(w, member.id, T0 + MIN, values={"rank": "gold"}, fill={"rank": "gold", "city": "Osaka"})
    after = w.user(member.id)
    assert after.fields["profile.rank"].v == "gold" and not after.fields["profile.rank"].q
    assert after.fields["profile.city"].v == "Tokyo"
    [change] = out.lookups  # type: ignore[attr-defined]
    assert (change.op, change.name, change.user_id) == ("result", "CRM", member.id)
    assert (change.record["filled"], change.record["kept"]) == (["profile.rank"], ["profile.city"])


def test_lookup_result_vouched_fills_qualified_member_data_and_bad_typed_values_are_skipped():
    """C4/U3: a vouched answer is qualified (member data for a member); a value the
    channel's declared type refuses (P2) is skipped and named, the others still fill."""
    w = World(ChannelSettings(CH, field_types={"profile.points": "number"}))
    member = w.upsert_member("m-1", T0)
    out = result(w, member.id, T0 + MIN, qualified=True, fill={"rank": "gold", "points": "many"})
    value = w.user(member.id).fields["profile.rank"]
    assert (value.v, value.q, value.m) == ("gold", True, True)
    assert "profile.points" not in w.user(member.id).fields
    assert list(out.lookups[0].record["refused"]) == ["profile.points"]  # type: ignore[attr-defined]


def test_lookup_failed_result_is_recorded_and_fills_nothing():
    w = World()
    member = w.upsert_member("m-1", T0)
    out = result(w, member.id, T0 + MIN, status="failed", error={"code": "timeout", "message": "slow"}, fill={"rank": "x"})
    assert "profile.rank" not in w.user(member.id).fields
    assert out.lookups[0].record["error"] == {"code": "timeout", "message": "slow"}  # type: ignore[attr-defined]
    assert out.publications == []  # type: ignore[attr-defined]


def test_lookup_result_for_an_unknown_user_is_rejected():
    w = World()
    out = w.send("lookup.result", T0, userId="u_nobody", name="CRM", status="ok", actor="system")
    assert out.rejection is not None and out.rejection.code == "unknown_user"


def test_lookup_define_and_remove_are_handed_to_the_store_in_order():
    w = World()
    body = {k: v for k, v in DEFINITION.items() if k != "wrappedKey"}
    [define] = w.ok("lookup.define", T0, name="CRM", **body).lookups
    assert define.op == "define" and define.definition == DEFINITION
    [remove] = w.ok("lookup.remove", T0 + MIN, name="CRM").lookups
    assert (remove.op, remove.name) == ("remove", "CRM")


@pytest.mark.parametrize("changes, words", [
    ({"connections": [{"result": "rank", "profileKey": "mobileNumber"}]}, "contact data"),
    ({"connections": [{"result": "missing", "profileKey": "x"}]}, "not the key of a result"),
    ({"encrypted": True}, "wrappedKey: required"),
    ({"url": "ftp://crm.example.jp"}, "http:// or https://"),
    ({"params": [DEFINITION["params"][0], DEFINITION["params"][0]]}, "unique"),  # type: ignore[index]
])
def test_lookup_define_refuses_unusable_definitions(changes: dict[str, object], words: str):
    import orjson

    body = {"eventId": "e", "type": "lookup.define", "channelId": CH, "occurredAt": T0, "actor": "a", "name": "CRM",
            **{k: v for k, v in DEFINITION.items() if k != "wrappedKey"}, **changes}
    with pytest.raises(InboundError) as err:
        parse_inbound("commands", orjson.dumps(body))
    assert words in err.value.message


# -- parameters and results ----------------------------------------------------------

CUSTOMER = {"id": "u_1", "memberId": "m-1", "name": "Taro", "profile": {"email": "taro@example.jp"}}


def test_lookup_automatic_params_need_every_parameter_bound_and_required_ones_present():
    assert bound_params(DEFINITION, CUSTOMER) == {"memberNo": "m-1", "mail": "taro@example.jp"}
    assert bound_params(DEFINITION, {**CUSTOMER, "profile": {}}) == {"memberNo": "m-1"}  # optional, absent
    assert bound_params(DEFINITION, {**CUSTOMER, "memberId": None}) is None  # required, absent
    free = {**DEFINITION, "params": [{**DEFINITION["params"][0], "bind": None}]}  # type: ignore[index]
    assert bound_params(free, CUSTOMER) is None  # a free-text parameter: only staff can fill it


def test_lookup_staff_params_are_checked_against_the_definition():
    params, errors = check_params(DEFINITION, {"memberNo": "123456789", "bogus": "1"}, CUSTOMER)
    assert {e["field"] for e in errors} == {"params.memberNo", "params.bogus"}
    params, errors = check_params(DEFINITION, {}, CUSTOMER)
    assert (params, errors) == ({"memberNo": "m-1", "mail": "taro@example.jp"}, [])


def test_lookup_results_read_nested_keys_and_connections_skip_missing_values():
    answer = {"rank": "gold", "account": {"since": "2019"}, "tags": {"a": 1}}
    values = result_values(DEFINITION, answer)
    assert values == {"rank": "gold", "account.since": "2019", "tags": '{"a":1}'}
    assert connected_fill(DEFINITION, values) == {"rank": "gold", "since": "2019"}
    assert connected_fill(DEFINITION, result_values(DEFINITION, {})) == {}


# -- safety --------------------------------------------------------------------------


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1",
])
def test_lookup_guard_refuses_non_public_addresses_by_default(address: str):
    assert not AddressPolicy().permits(ipaddress.ip_address(address))


def test_lookup_guard_allows_public_addresses_and_the_operators_networks_only():
    assert AddressPolicy().permits(ipaddress.ip_address("93.184.215.14"))
    policy = AddressPolicy(parse_networks("127.0.0.0/8, ::1/128"))
    assert policy.permits(ipaddress.ip_address("127.0.0.1")) and policy.permits(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert policy.permits(ipaddress.ip_address("::1"))
    assert not policy.permits(ipaddress.ip_address("10.0.0.1"))


def test_lookup_payload_roundtrip_and_tampering_fails():
    key = crypto.new_key()
    sealed = crypto.seal(key, b'{"memberNo":"m-1"}')
    assert crypto.open_sealed(key, sealed) == b'{"memberNo":"m-1"}'
    with pytest.raises(crypto.CryptoFailed):
        crypto.open_sealed(crypto.new_key(), sealed)
    raw = bytearray(base64.b64decode(sealed["data"]))
    raw[0] ^= 1
    with pytest.raises(crypto.CryptoFailed):
        crypto.open_sealed(key, {**sealed, "data": base64.b64encode(raw).decode()})
    with pytest.raises(crypto.CryptoFailed):
        crypto.open_sealed(key, {"iv": "***", "data": "x"})


def test_lookup_wrapped_key_opens_only_for_its_channel_and_name_under_its_kek():
    kek, key = crypto.new_key(), crypto.new_key()
    wrapped = crypto.wrap(kek, key, CH, "CRM")
    assert key.hex() not in wrapped and crypto.unwrap(kek, wrapped, CH, "CRM") == key
    for args in ((kek, wrapped, CH, "Other"), (kek, wrapped, "ch_other", "CRM"), (crypto.new_key(), wrapped, CH, "CRM")):
        with pytest.raises(crypto.CryptoFailed):
            crypto.unwrap(*args)


def test_lookup_breaker_opens_after_failures_and_half_opens_for_one_trial():
    now = [0.0]
    breaker = Breaker(failures=3, reset_s=30, clock=lambda: now[0])
    for _ in range(3):
        assert breaker.allow("k")
        breaker.failure("k")
    assert not breaker.allow("k") and breaker.retry_after("k") == 30
    now[0] = 30.0
    assert breaker.allow("k") and not breaker.allow("k")  # one trial at a time
    breaker.failure("k")  # the trial failed: open again
    assert not breaker.allow("k")
    now[0] = 60.0
    assert breaker.allow("k")
    breaker.success("k")
    assert breaker.allow("k") and breaker.allow("other")


def test_lookup_rate_limit_is_per_channel_and_refills():
    now = [0.0]
    rate = RateLimit(per_s=1, burst=2, clock=lambda: now[0])
    assert rate.take("a") == 0 and rate.take("a") == 0
    assert rate.take("a") == pytest.approx(1.0)
    assert rate.take("b") == 0  # another channel has its own
    now[0] = 1.0
    assert rate.take("a") == 0
