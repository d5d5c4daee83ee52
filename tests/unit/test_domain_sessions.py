"""Sessions and activity (S1–S4) in the pure core."""

from __future__ import annotations

from .domain_support import DAY, HOUR, MIN, T0, World

# -- S1 ----------------------------------------------------------------------------------


def test_s1_sessions_count_counts_sessions_not_boots():
    w = World()
    for at in (T0, T0 + 10 * MIN, T0 + 35 * MIN, T0 + 65 * MIN):  # gaps of 10, 25, 30 min
        w.boot("v1", at)
    assert w.veil("v1").sessions_count == 1
    w.boot("v1", T0 + 65 * MIN + 30 * MIN + 1)  # just over 30 minutes idle
    assert w.veil("v1").sessions_count == 2
    assert w.veil("v1").web.sessions_count == 2


def test_s1_session_window_runs_from_the_last_activity_not_the_first_boot():
    w = World()
    w.boot("v1", T0)
    w.boot("v1", T0 + 29 * MIN)
    w.boot("v1", T0 + 58 * MIN)  # 58 min after the first boot, 29 after the last
    assert w.veil("v1").sessions_count == 1


def test_s1_sessions_are_counted_per_platform():
    w = World()
    w.boot("v1", T0, platform="web")
    w.boot("v1", T0 + 2 * HOUR, platform="mobile")
    w.boot("v1", T0 + 4 * HOUR, platform="mobile")
    user = w.veil("v1")
    assert (user.sessions_count, user.web.sessions_count, user.mobile.sessions_count) == (3, 1, 2)


def test_s1_a_first_boot_on_another_platform_within_the_session_is_a_session_there():
    w = World()
    w.boot("v1", T0, platform="web")
    w.boot("v1", T0 + 5 * MIN, platform="mobile")
    user = w.veil("v1")
    assert user.web.sessions_count == 1
    assert user.mobile.sessions_count == 1
    assert user.mobile.last_seen_at == T0 + 5 * MIN


def test_s1_a_late_boot_inside_a_known_session_counts_nothing():
    w = World()
    w.boot("v1", T0)
    w.boot("v1", T0 + 20 * MIN)
    w.boot("v1", T0 + 10 * MIN)  # consumed late
    user = w.veil("v1")
    assert user.sessions_count == 1
    assert user.last_seen_at == T0 + 20 * MIN


def test_s1_a_login_counts_for_the_platform_of_that_veils_session():
    """An app user's login (which names no platform) is an app visit: it counts towards
    mobile sessions, not web ones; a login on a web veil stays web."""
    w = World()
    w.boot("app", T0, platform="mobile")
    w.ok("login", T0 + 2 * HOUR, veilId="app", memberId="m-1")
    member = w.member("m-1")
    assert (member.sessions_count, member.web.sessions_count, member.mobile.sessions_count) == (2, 0, 2)
    assert member.mobile.last_seen_at == T0 + 2 * HOUR and member.web.last_seen_at is None
    w.boot("web", T0 + 4 * HOUR, platform="web")
    w.ok("login", T0 + 6 * HOUR, veilId="web", memberId="m-1")
    member = w.member("m-1")
    assert (member.web.sessions_count, member.mobile.sessions_count) == (2, 2)


def test_s1_a_login_on_an_app_veil_merged_into_a_member_still_counts_for_the_app():
    """The veil's platform moves with it when its anonymous user merges (U2, U4)."""
    w = World()
    w.boot("web", T0, platform="web", memberId="m-1")
    w.boot("app", T0 + HOUR, platform="mobile")
    w.ok("login", T0 + HOUR + MIN, veilId="app", memberId="m-1")  # merges the app's visitor
    w.ok("login", T0 + 5 * HOUR, veilId="app", memberId="m-1")
    member = w.member("m-1")
    assert (member.web.sessions_count, member.mobile.sessions_count) == (1, 2)


# -- S2 ----------------------------------------------------------------------------------


def test_s2_boot_updates_last_seen_device_language_city_country():
    w = World()
    w.boot(
        "v1",
        T0,
        device={"browser": "chrome", "os": "mac"},
        language="ja",
        city="Tokyo",
        country="JP",
    )
    w.boot(
        "v1",
        T0 + 5 * MIN,
        device={"browser": "firefox", "osName": "macOS"},
        language="en",
        city="Osaka",
        country="JP",
    )
    user = w.veil("v1")
    assert user.last_seen_at == T0 + 5 * MIN
    assert user.web.last_seen_at == T0 + 5 * MIN
    assert user.mobile.last_seen_at is None
    assert user.web.device == {"browser": "firefox", "os": "mac", "osName": "macOS"}
    assert (user.language, user.city, user.country) == ("en", "Osaka", "JP")


def test_s2_mobile_boot_updates_mobile_fields_only():
    w = World()
    w.boot("v1", T0, platform="mobile", device={"appName": "shop", "appVersion": "2.1.0"})
    user = w.veil("v1")
    assert user.mobile.device == {"appName": "shop", "appVersion": "2.1.0"}
    assert user.mobile.last_seen_at == T0
    assert user.web.device == {}
    assert user.web.last_seen_at is None


def test_s2_a_late_boot_never_moves_last_seen_back():
    w = World()
    w.boot("v1", T0 + HOUR)
    w.boot("v1", T0)
    assert w.veil("v1").last_seen_at == T0 + HOUR
    assert w.veil("v1").web.last_seen_at == T0 + HOUR


# -- S3 ----------------------------------------------------------------------------------


def test_s3_boot_after_logout_within_session_stays_the_member():
    w = World()
    w.boot("v1", T0, memberId="m1")
    w.boot("v1", T0 + 10 * MIN)  # logged out, same session
    member = w.member("m1")
    assert w.veil("v1").id == member.id
    assert member.sessions_count == 1


def test_s3_boot_after_logout_session_end_starts_new_anonymous_user():
    w = World()
    w.boot("v1", T0, memberId="m1")
    w.boot("v1", T0 + 10 * MIN)
    w.boot("v1", T0 + 41 * MIN + 1)  # 31 minutes after the last activity

    member, anon = w.member("m1"), w.veil("v1")
    assert anon.id != member.id
    assert anon.type == "anonymous"
    assert anon.sessions_count == 1
    assert member.sessions_count == 1
    assert "v1" not in member.veils


def test_s3_old_anonymous_history_stays_with_the_member_it_was_merged_into():
    w = World()
    m = w.upsert_member("m1", T0)
    w.boot("v1", T0, device={"browser": "chrome"})
    w.ok("track", T0 + MIN, veilId="v1", name="viewed")
    first_anon = w.veil("v1").id
    w.boot("v1", T0 + 2 * MIN, memberId="m1")  # U2: merged into m1
    w.boot("v1", T0 + 3 * HOUR)  # logged out, session over

    member, fresh = w.user(m.id), w.veil("v1")
    assert fresh.id not in (first_anon, m.id)
    assert fresh.sessions_count == 1 and fresh.merged_user_ids == []
    assert w.directory.resolve(first_anon).id == m.id
    assert member.merged_user_ids == [first_anon]
    assert member.sessions_count == 1
    assert member.web.device == {"browser": "chrome"}


# -- S4 ----------------------------------------------------------------------------------


def test_s4_anonymous_veil_expires_a_year_after_its_last_boot():
    w = World()
    w.boot("v1", T0)
    old = w.veil("v1").id
    w.boot("v1", T0 + 366 * DAY)

    fresh = w.veil("v1")
    assert fresh.id != old
    assert fresh.type == "anonymous"
    assert fresh.created_at == T0 + 366 * DAY
    assert w.user(old).sessions_count == 1  # the old user is kept, no longer on the veil
    assert "v1" not in w.user(old).veils


def test_s4_anonymous_veil_within_a_year_is_the_same_user():
    w = World()
    w.boot("v1", T0)
    old = w.veil("v1").id
    w.boot("v1", T0 + 200 * DAY)
    w.boot("v1", T0 + 400 * DAY)  # 200 days after the last boot
    assert w.veil("v1").id == old
    assert w.veil("v1").sessions_count == 3
