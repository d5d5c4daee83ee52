"""Regenerate the checked-in contract files: `python -m contracts.export`.

Writes one JSON Schema per message into `contracts/schemas/` (inbound ones named by
their wire `type`, e.g. `profile.update.json`; outbound ones by topic) and faststream's
AsyncAPI document into `contracts/asyncapi.json`. JSON rather than YAML because
faststream's YAML output needs PyYAML, which the project does not depend on.
The rendering is deterministic so that a test can compare it with the files in git.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from contracts.asyncapi import asyncapi_document
from contracts.inbound import MODELS
from contracts.outbound import DeadLetter, UserChanged

PACKAGE_DIR = Path(__file__).resolve().parent
SCHEMA_DIR = "schemas"
ASYNCAPI_FILE = "asyncapi.json"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _dump(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _schema(model: type[BaseModel], mode: str) -> str:
    # Inbound: what a producer may send (validation). Outbound: what a consumer receives.
    return _dump({"$schema": _DIALECT, **model.model_json_schema(mode=mode)})  # type: ignore[arg-type]


def render() -> dict[str, str]:
    """Every generated file, path relative to the package → its text."""
    files = {
        f"{SCHEMA_DIR}/{wire_type}.json": _schema(model, "validation")
        for models in MODELS.values()
        for wire_type, model in models.items()
    }
    files[f"{SCHEMA_DIR}/user-changed.json"] = _schema(UserChanged, "serialization")
    files[f"{SCHEMA_DIR}/dead-letter.json"] = _schema(DeadLetter, "serialization")
    files[ASYNCAPI_FILE] = _dump(asyncapi_document())
    return files


def stale(root: Path = PACKAGE_DIR) -> list[str]:
    """Generated files under `root` that differ from the models, are missing, or are extra."""
    expected = render()
    present = {f"{SCHEMA_DIR}/{p.name}" for p in (root / SCHEMA_DIR).glob("*.json")}
    present.add(ASYNCAPI_FILE)
    return sorted(
        path
        for path in expected.keys() | present
        if not (root / path).is_file()
        or path not in expected
        or (root / path).read_text(encoding="utf-8") != expected[path]
    )


def write(root: Path = PACKAGE_DIR) -> list[str]:
    """Bring the files under `root` up to date; return the paths changed or removed."""
    expected = render()
    changed = stale(root)
    (root / SCHEMA_DIR).mkdir(exist_ok=True)
    for path in changed:
        if path in expected:
            (root / path).write_text(expected[path], encoding="utf-8")
        else:
            (root / path).unlink()
    return changed


def main() -> None:
    changed = write()
    print("\n".join(f"updated contracts/{path}" for path in changed) or "contracts are current")


if __name__ == "__main__":
    main()
