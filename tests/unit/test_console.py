"""The console's pure parts: language choice, the session cookie's signature, CSRF,
the sign-in redirect, and the U3 preview taken from the domain's merge."""

from __future__ import annotations

from services.console.i18n import EN, JA, negotiate, translator
from services.console.routes.unification import preview_rows, refusal
from services.console.session import Session, Sessions, csrf_ok
from services.console.web import local_target
from services.domain.user import User, Value


def test_i18n_browser_language_picks_japanese_or_english_by_q_value() -> None:
    assert negotiate("ja-JP,ja;q=0.9,en;q=0.8") == "ja"
    assert negotiate("fr-FR,en;q=0.5,ja;q=0.7") == "ja"
    assert negotiate("de-DE") == "en"
    assert negotiate(None) == "en"
    assert negotiate("ja;q=0") == "en"


def test_i18n_both_catalogues_have_the_same_messages_and_placeholders() -> None:
    assert set(EN) == set(JA)
    for key, text in EN.items():
        names = sorted(part.split("}")[0] for part in text.split("{")[1:])
        assert names == sorted(part.split("}")[0] for part in JA[key].split("{")[1:]), key
    assert translator("ja")("customers.mu", count=3) == "MU（リード＋メンバー、ブロック顧客を除く）：3"
    assert translator("en")("no.such.message") == "[no.such.message]"


class _Req:
    def __init__(self, cookie: str | None) -> None:
        self.cookies = {"unifier_console": cookie} if cookie else {}


def test_session_cookie_is_signed_and_holds_no_key() -> None:
    sessions = Sessions("secret-1")
    s = Session(key_id="abcd1234", lang="ja")
    raw = sessions._signer.dumps(s.to_json())
    assert sessions.read(_Req(raw)) == s  # type: ignore[arg-type]
    tampered = raw.replace(raw[5], "A" if raw[5] != "A" else "B", 1)
    assert sessions.read(_Req(tampered)) is None  # type: ignore[arg-type]
    assert Sessions("secret-2").read(_Req(raw)) is None  # type: ignore[arg-type]


def test_csrf_token_must_match_the_sessions_and_is_renewed_at_sign_in() -> None:
    s = Session()
    assert csrf_ok(s, s.csrf)
    assert not csrf_ok(s, s.csrf + "x")
    assert not csrf_ok(s, None)
    assert not csrf_ok(None, s.csrf)
    assert s.signed_in("k").csrf != s.csrf


def test_sign_in_follows_only_console_paths() -> None:
    assert local_target("/console/c/ch/customers?q=a") == "/console/c/ch/customers?q=a"
    assert local_target("https://evil.example/console/x") == "/console/x"
    assert local_target("//evil.example/") == "/console/"
    assert local_target("/admin") == "/console/"
    assert local_target(None) == "/console/"


def _user(uid: str, kind: str, **fields: Value) -> User:
    return User(id=uid, channel_id="ch", type=kind, created_at=1, updated_at=1, fields=dict(fields))  # type: ignore[arg-type]


def test_u3_preview_is_the_domains_merge_key_by_key() -> None:
    lead = _user("l", "lead", **{
        "profile.company": Value("ACME", True, False, 50),  # qualified lead data
        "profile.note": Value("only here", False, False, 10),
        "profile.referrer": Value("ad", True, False, 5),  # P3: the earliest stays
    })
    member = _user("m", "member", **{
        "profile.company": Value("旧商事", True, True, 20),  # qualified member data wins (U3)
        "profile.referrer": Value("search", True, True, 30),
    })
    rows = {r["key"]: r for r in preview_rows(lead, member)}
    assert rows["profile.company"]["winner"] == "target"
    assert rows["profile.note"]["winner"] == "source"  # a value beats none
    assert rows["profile.referrer"]["winner"] == "source"


def test_u1_refusals_are_said_in_words() -> None:
    _ = translator("en")
    lead, other, member = _user("l", "lead"), _user("o", "lead"), _user("m", "member")
    assert refusal(_, lead, member) is None
    assert "never merges into a lead (U1)" in (refusal(_, lead, other) or "")
    assert "members are never merged (U1)" in (refusal(_, member, _user("n", "member")) or "")
    assert refusal(_, lead, lead) == _("uni.u1.same")


def test_refusals_are_said_in_the_staff_language_for_every_documented_code() -> None:
    """A Japanese page never shows the service's English reason for a refused command:
    it says what the code means in Japanese (with the code, for a support ticket);
    an English page keeps the service's specific reason. Every dead-letter code the
    contract lists, and every code the domain raises, has words in both languages."""
    import re
    from pathlib import Path

    from services.console.i18n import REFUSALS_EN, REFUSALS_JA, refusal

    root = Path(__file__).resolve().parents[2]
    documented = set(re.findall(r"`([a-z]+_[a-z_]+|conflict|unstorable)`", (root / "docs/contract.md").read_text().split("**Dead-letter codes**")[1].split("A dead letter's")[0]))
    raised = {
        m for path in (root / "services/domain").glob("*.py")
        for m in re.findall(r'Rejected\(\s*"([a-z_]+)"', path.read_text())
    }
    assert {"merged_user", "stale_candidate", "invalid_fields"} <= documented | raised | {"invalid_fields"}
    missing = sorted((documented | raised) - REFUSALS_EN.keys())
    assert not missing, missing
    assert REFUSALS_EN.keys() == REFUSALS_JA.keys()

    said = refusal("ja", "merged_user", "user u1 was merged into u2")
    assert "統合" in said and "merged_user" in said and "merged into" not in said
    assert refusal("en", "merged_user", "user u1 was merged into u2") == "user u1 was merged into u2"
    assert refusal("ja", "some_future_code", "new reason") == "new reason"  # unknown code: the reason as it came
