"""Columns → keys (I1, I5): the header maps to itself unless `--map` says otherwise.

`--map "CSV column=key[:type]"` maps a column to a key, creating a `profile.*` key with
that type when the channel has none; `--map "CSV column="` skips the column. A column
whose header is empty is skipped; so are `rowNumber`, `errorColumns` and `errorReason`,
the bookkeeping columns of a failures file, so that a fixed failures file can be
imported as it is. Everything else must map to an editable key exactly once, or the
import is refused before any row is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.domain.imports import (
    LEAD_KEYS,
    Column,
    ImportDef,
    MappingError,
    key_type,
    resolve_key,
)

FAILURE_COLUMNS = ("rowNumber", "errorColumns", "errorReason")


@dataclass(frozen=True, slots=True)
class MapSpec:
    column: str
    key: str | None  # None: skip the column
    type: str | None


def parse_map(spec: str) -> MapSpec:
    """`"Birthday=profile.birthday:date"`, `"mail=email"`, `"memo="` (skip)."""
    column, sep, target = spec.rpartition("=")
    if not sep or not column.strip():
        raise MappingError(f"--map {spec!r}: write it as 'CSV column=key[:type]', or 'CSV column=' to skip it")
    target = target.strip()
    if not target:
        return MapSpec(column.strip(), None, None)
    key, colon, type_name = target.partition(":")
    if colon and not type_name.strip():
        raise MappingError(f"--map {spec!r}: a type must follow ':'")
    return MapSpec(column.strip(), key.strip(), type_name.strip() or None)


@dataclass(frozen=True, slots=True)
class Plan:
    """The mapping of one file: which cell positions go to which key."""

    mode: str
    key: str  # memberId | email | mobileNumber (the contract's spelling)
    columns: tuple[Column, ...]
    positions: tuple[int, ...]  # cell index of each column

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.columns]


def plan(
    headers: Sequence[str], maps: Sequence[str], mode: str, lead_key: str | None, declared: dict[str, str],
) -> Plan:
    """Map the file's header for a `mode` import; `declared` are the channel's profile
    types (P2). Raises MappingError naming the column and what to do."""
    specs: dict[str, MapSpec] = {}
    for raw in maps:
        parsed = parse_map(raw)
        if parsed.column in specs:
            raise MappingError(f"column {parsed.column!r} is given two --map options")
        specs[parsed.column] = parsed
    positions: dict[str, int] = {}
    for i, name in enumerate(headers):
        name = name.strip()
        if not name:
            continue
        if name in positions:
            raise MappingError(f"two columns are named {name!r} (columns {positions[name] + 1} and {i + 1}): rename one")
        positions[name] = i
    unknown = [c for c in specs if c not in positions]
    if unknown:
        raise MappingError(f"--map names no column of the file: {', '.join(map(repr, unknown))} (columns: {', '.join(map(repr, positions))})")

    columns: list[Column] = []
    where: list[int] = []
    for name, i in positions.items():
        spec = specs.get(name)
        if spec is None and name in FAILURE_COLUMNS:
            continue
        key_name, given = (name, None) if spec is None else (spec.key, spec.type)
        if key_name is None:
            continue
        try:
            key = resolve_key(key_name)
            type_name = key_type(key, given, declared)
        except MappingError as err:
            hint = "" if spec is not None else f"; map it with --map '{name}=KEY[:type]' or skip it with --map '{name}='"
            raise MappingError(f"column {name!r}: {err.reason}{hint}") from None
        columns.append(Column(headers[i], key, type_name))
        where.append(i)

    if mode == "member":
        if lead_key not in (None, "memberId"):
            raise MappingError("--key is for lead imports; a member import is keyed by memberId (I1)")
        key = "memberId"
    else:
        mapped = [short for short, full in LEAD_KEYS.items() if any(c.key == full for c in columns)]
        if lead_key is None:
            if len(mapped) != 1:
                raise MappingError("a lead import needs --key email or --key mobileNumber: the key of its rows (I1)")
            lead_key = mapped[0]
        if lead_key not in LEAD_KEYS:
            raise MappingError(f"--key {lead_key!r}: a lead import is keyed by email or mobileNumber (I1)")
        key = lead_key
    ImportDef.build("", "", mode, key, "keep", None, columns)  # I1/I5 checks shared with the projection
    return Plan(mode, key, tuple(columns), tuple(where))
