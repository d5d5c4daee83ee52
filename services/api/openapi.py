"""The OpenAPI document of the HTTP API, generated from the app and checked in as
`contracts/openapi.json` (tests/unit/test_api_openapi.py fails when it is stale).

    python -m services.api.openapi      # rewrite contracts/openapi.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from services.platform.config import Settings

PATH = Path(__file__).resolve().parents[2] / "contracts" / "openapi.json"


def document() -> dict[str, Any]:
    from .app import create_app

    # Addresses are needed to build the app, not to describe it: nothing connects here.
    settings = Settings().replace(database_url="postgresql://unused", kafka_bootstrap="unused:9092")
    return create_app(settings).openapi()


def render() -> bytes:
    return orjson.dumps(document(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


if __name__ == "__main__":
    PATH.write_bytes(render())
    print(f"wrote {PATH}")
