"""Hostile inbound records for the fuzzing test (tests/integration/test_fuzz.py).

Each record starts as a valid message generated from the contract's JSON Schemas
(contracts/schemas/), with identifiers drawn from small pools so that facts meet each
other (a login finds the lead a contact made), and is then usually mutated: wrong
types, missing or unknown fields, huge and deep values, U+0000 and other control
characters, lone surrogates, bytes that are not UTF-8, truncated JSON, the wrong topic,
junk Kafka keys. A `random.Random(seed)` draws everything, so a seed reproduces a run.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.inbound import MODELS
from services.domain.ids import member_user_id, veil_user_id

SCHEMAS = Path(__file__).resolve().parents[2] / "contracts" / "schemas"
KIND_OF = {wire: kind for kind, models in MODELS.items() for wire in models}
T0 = 1_767_225_600_000

CHANNELS = ["fz_plain", "fz_hashed", "fz_limited"]
HASH_SECRET = "fuzz-secret"
VEILS = ["v1", "v2", "v3", "line:U1", "null", " v1 "]
MEMBERS = ["m1", "m2", "M1", "undefined"]
EMAILS = ["taro@example.jp", "TARO@example.jp", "hanako@example.jp", "not-an-email", "ｔａｒｏ＠ｅｘａｍｐｌｅ．ｊｐ"]
MOBILES = ["+819012345678", "09012345678", "+1 202 555 0100", "12"]
ODD_TEXT = ["", " ", "é", "😀", "\u3000", "\ufeff", "\u2028", "\x01\x1f\x7f", "'; DROP TABLE users; --", "=1+1", "%s%n"]


_SCHEMAS = {p.stem: json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.json")) if p.stem in KIND_OF}


@dataclass(slots=True)
class Hostile:
    kind: str  # the inbound topic kind it is sent to
    key: bytes | None
    value: bytes | None
    ident: tuple[str, str] | None  # (channelId, eventId) when the value still names them
    mutation: str


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.schemas = _SCHEMAS
        self.count = 0
        self._channel = CHANNELS[0]

    # -- valid messages from the schemas ---------------------------------------------

    def valid(self, wire: str) -> dict[str, Any]:
        schema = self.schemas[wire]
        msg = self._object(schema, schema.get("$defs", {}), "")
        self.count += 1
        msg["eventId"] = f"fz-{self.count}"
        msg["type"] = wire
        return msg

    def _value(self, schema: dict[str, Any], defs: dict[str, Any], name: str, depth: int = 0) -> Any:
        rng = self.rng
        if "$ref" in schema:
            return self._value(defs[schema["$ref"].rsplit("/", 1)[1]], defs, name, depth)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return rng.choice(schema["enum"])
        for union in ("anyOf", "oneOf"):
            if union in schema:
                options = [s for s in schema[union] if s.get("type") != "null"] or schema[union]
                if rng.random() < 0.15 and any(s.get("type") == "null" for s in schema[union]):
                    return None
                return self._value(rng.choice(options), defs, name, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = rng.choice(kind)
        if kind == "object":
            if "properties" in schema:
                return self._object(schema, defs, name)
            return {self._key(name): self._free(depth + 1) for _ in range(rng.randint(0, 3))}
        if kind == "array":
            return [self._value(schema.get("items", {}), defs, name, depth + 1) for _ in range(rng.randint(0, 3))]
        if kind == "string":
            return self._string(name, schema)
        if kind == "integer":
            if name == "occurredAt":
                return T0 + rng.randint(0, 10 * 86_400_000)
            return rng.randint(int(schema.get("minimum", 0)), min(int(schema.get("maximum", 1000)), 1000))
        if kind == "number":
            return rng.choice([0, 1.5, -3, 1e9])
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "null":
            return None
        return self._free(depth + 1)

    def _object(self, schema: dict[str, Any], defs: dict[str, Any], name: str) -> dict[str, Any]:
        required = set(schema.get("required", ()))
        out: dict[str, Any] = {}
        for prop, sub in schema.get("properties", {}).items():
            if prop in required or self.rng.random() < 0.5:
                out[prop] = self._value(sub, defs, prop)
        return out

    def _string(self, name: str, schema: dict[str, Any]) -> str:
        rng = self.rng
        pools = {
            "channelId": CHANNELS, "veilId": VEILS, "memberId": MEMBERS, "email": EMAILS,
            "mobileNumber": MOBILES, "platform": ["web", "mobile"],
        }
        if name in pools:
            chosen = rng.choice(pools[name])
            if name == "channelId":
                self._channel = chosen
            return chosen
        if name in ("userId", "sourceUserId", "targetUserId"):
            if rng.random() < 0.3:
                return f"u_{rng.getrandbits(64):016x}"
            # Users the other facts create, so commands meet them (merges, deletes, blocks).
            if rng.random() < 0.5:
                return veil_user_id(self._channel, rng.choice(VEILS).strip())
            return member_user_id(self._channel, rng.choice(MEMBERS))
        if name == "importId":
            return rng.choice(["imp_fz1", "imp_fz2"])
        if name == "memberHash":
            return rng.choice(["", "00" * 32, "é", "ｆｆ" * 32])
        text = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(rng.randint(1, 12)))
        if rng.random() < 0.2:
            text = rng.choice(ODD_TEXT)
        return text[: int(schema.get("maxLength", 10_000))] if text or not schema.get("minLength") else "x"

    def _key(self, name: str) -> str:
        if name in ("profile", "cells"):
            return self.rng.choice(["email", "mobileNumber", "nick", "points", "tags", "a.b", "profile.email", "name"])
        return self.rng.choice(["a", "b", "sku", "qty", "é", ""])

    def _free(self, depth: int) -> Any:
        rng = self.rng
        roll = rng.random()
        if depth < 4 and roll < 0.2:
            return {self._key(""): self._free(depth + 1) for _ in range(rng.randint(0, 3))}
        if depth < 4 and roll < 0.35:
            return [self._free(depth + 1) for _ in range(rng.randint(0, 3))]
        return rng.choice([None, True, 0, -1, 2.5, 2**53, "x", "", "é", rng.choice(ODD_TEXT)])

    # -- mutations --------------------------------------------------------------------

    def record(self) -> Hostile:
        rng = self.rng
        # SDK events twice as often as the rest: they make the users the rest refer to.
        wire = rng.choice(sorted(self.schemas) + [w for w in sorted(self.schemas) if KIND_OF[w] == "sdk-events"])
        kind = KIND_OF[wire]
        msg: Any = self.valid(wire)
        mutation = "none" if rng.random() < 0.5 else rng.choice(MUTATIONS)
        raw: bytes | None = None
        key: bytes | None = msg["channelId"].encode()
        if mutation == "wrong_type":
            field = rng.choice(sorted(msg))
            msg[field] = rng.choice([None, 1, -2**70, 1.5, True, [], {}, "x", [None], {"a": []}])
        elif mutation == "drop_field":
            msg.pop(rng.choice(sorted(msg)))
        elif mutation == "unknown_field":
            msg[rng.choice(["extra", "__proto__", "constructor", "é"])] = 1
        elif mutation == "unknown_type":
            msg["type"] = rng.choice(["boot ", "BOOT", "", "user.merge", "track\x00"])
        elif mutation == "long_string":
            self._set_string(msg, "x" * rng.choice([129, 257, 4097, 16_385, 40_000, 70_000]))
        elif mutation == "deep":
            nested: Any = 1
            for _ in range(rng.choice([8, 9, 11, 40, 300, 700])):
                nested = {"a": nested} if rng.random() < 0.5 else [nested]
            msg[rng.choice(["properties", "profile", "device", "cells", "extra"] + sorted(msg))] = nested
        elif mutation == "nul":
            self._set_string(msg, rng.choice(["\x00", "a\x00b", "\x00" * 3]), into=True)
        elif mutation == "nul_key":
            target = msg.get(rng.choice(["profile", "properties", "cells"]))
            (target if isinstance(target, dict) else msg)["k\x00"] = "v"
        elif mutation == "control":
            self._set_string(msg, "".join(rng.choice("\x01\x08\x0b\x1b\x7f\u2028\u2029\ufeff\ufffe") for _ in range(4)), into=True)
        elif mutation == "huge_number":
            msg[rng.choice(["occurredAt", "rowNumber", "rows"] + sorted(msg))] = rng.choice(
                [2**63, 2**64 - 1, -1, -(2**63), 1e308, 0.5]
            )
        elif mutation == "many_keys":
            msg["profile"] = {f"k{i}": "v" * 100 for i in range(rng.choice([50, 500, 2000]))}
        elif mutation == "not_object":
            raw = rng.choice([b"[]", b'"boot"', b"null", b"42", b"", b"{}", b"[{}]"])
        elif mutation == "tombstone":
            raw = None
        # The standard encoder: orjson refuses to write what is nested over 254 levels.
        body = json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode() if isinstance(msg, dict) else b""
        if mutation == "surrogate":
            raw = body.replace(b'"', b'"\\ud800', 4) if rng.random() < 0.5 else body.replace(b'":"', b'":"\\udfff', 1)
        elif mutation == "bad_utf8":
            at = rng.randrange(len(body) + 1)
            raw = body[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]) + body[at:]
        elif mutation == "truncated":
            raw = body[: rng.randrange(len(body))]
        elif mutation == "bad_key":
            key = rng.choice([None, b"", b"\x00", b"ch\x00\xff", b"\xfe" * 300, "é".encode()])
        elif mutation == "wrong_topic":
            kind = rng.choice([k for k in ("sdk-events", "commands", "import-rows") if k != kind])
        if mutation not in ("surrogate", "bad_utf8", "truncated", "not_object", "tombstone"):
            raw = body
        ident = None
        if isinstance(msg, dict) and isinstance(msg.get("channelId"), str) and isinstance(msg.get("eventId"), str):
            ident = (msg["channelId"], msg["eventId"])
        return Hostile(kind, key, raw, ident, mutation)

    def _set_string(self, msg: dict[str, Any], text: str, *, into: bool = False) -> None:
        """Put `text` in (or into) a string somewhere in `msg`, nested ones included."""
        spots: list[tuple[Any, Any]] = []
        stack: list[Any] = [msg]
        while stack:
            node = stack.pop()
            for k, v in (node.items() if isinstance(node, dict) else enumerate(node)):
                if isinstance(v, str) and k != "type":
                    spots.append((node, k))
                elif isinstance(v, (dict, list)):
                    stack.append(v)
        if not spots:
            msg["name"] = text
            return
        node, k = self.rng.choice(spots)
        node[k] = node[k][:1] + text + node[k][1:] if into else text


MUTATIONS = [
    "wrong_type", "drop_field", "unknown_field", "unknown_type", "long_string", "deep", "nul", "nul_key",
    "control", "huge_number", "many_keys", "not_object", "tombstone", "surrogate", "bad_utf8", "truncated",
    "bad_key", "wrong_topic",
]
