"""JSON answers rendered with orjson and handed to FastAPI as ready responses, so a
user's JSON is not walked by FastAPI's `jsonable_encoder` and a pydantic response model
on every request (measured: most of a read's CPU in the API). The OpenAPI document
still describes them (each route's `responses`)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse


class Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
