"""The constructors written out for the compiled core (docs/decisions.md, "Issue 14,
session 10: the compiled core's hot spots") build what the generated ones built: the
same fields, a fresh container for each default, frozen classes still frozen, and
`new_value` the very tuple `Value(...)` is. Run on both cores (`make test`)."""

from __future__ import annotations

import dataclasses

import pytest

from contracts.decode import BootEvent
from contracts.inbound import parse_inbound
from services.domain.core import Activity, Fact
from services.domain.publication import Publication
from services.domain.unification import Contested, MergeRecord
from services.domain.user import Platform, Value, new_value


def test_new_value_is_the_named_tuple_value_builds() -> None:
    built = new_value("Taro", True, False, 7)
    assert type(built) is Value and built == Value("Taro", True, False, 7)
    assert (built.v, built.q, built.m, built.t) == ("Taro", True, False, 7)


def test_platform_defaults_give_each_platform_its_own_device() -> None:
    """S2: a device recorded on one platform must not appear on another (a shared
    default dict would)."""
    a, b = Platform(), Platform()
    a.device["os"] = "ios"
    assert b.device == {} and (b.sessions_count, b.last_seen_at) == (0, None)
    given = {"browser": "chrome"}
    assert Platform(2, 5, given).device is given  # the generated __init__ kept the dict given
    assert Platform(2, 5, given) == Platform(sessions_count=2, last_seen_at=5, device={"browser": "chrome"})


@pytest.mark.parametrize("instance", [
    Fact(BootEvent(eventId="e", channelId="ch", occurredAt=1, veilId="v", platform="web"), 1),
    Activity("ch", "u_1", "chat", "e", 1, {"text": "hi"}),
    Publication("ch:u_1", b"{}"),
    Contested("profile.email", "target", "a@x.jp", "b@x.jp"),
    MergeRecord("ch", "u_1", "u_2", "e", 1, (Contested("name", "source", "A", "B"),)),
], ids=lambda i: type(i).__name__)
def test_written_out_constructors_set_every_field_and_stay_frozen(instance: object) -> None:
    """G4, U4: records and activities are values: every field set from its argument,
    equal to a copy built by keyword, and not changeable after."""
    names = [f.name for f in dataclasses.fields(instance) if f.init]  # type: ignore[arg-type]
    values = {name: getattr(instance, name) for name in names}
    assert type(instance)(**values) == instance
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(instance, names[0], values[names[0]])


@pytest.mark.parametrize("msg", [
    BootEvent(eventId="e-1", channelId="ch-1", occurredAt=5, veilId="v", platform="web"),
    parse_inbound("sdk-events", b'{"eventId":"e-1","type":"boot","channelId":"ch-1","occurredAt":5,"veilId":"v","platform":"web"}'),
], ids=["struct", "model"])
def test_a_fact_holds_its_messages_envelope(msg: object) -> None:
    """The projection's loop, the keys and the core read a fact's type, channel and
    eventId from the fact (read from the message once, issue 14 session 12): they are
    the message's own, for the fast decoder's struct and the contract's model alike."""
    fact = Fact(msg, 5)
    assert (fact.type, fact.channel_id, fact.event_id) == ("boot", "ch-1", "e-1")
    assert fact == Fact(msg, 5) and fact != Fact(msg, 6)
