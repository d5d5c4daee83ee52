"""Path and query parameters shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from services.store.queries import MAX_PAGE

Channel = Annotated[str, Path(min_length=1, max_length=128, description="The channel (tenant).")]
UserId = Annotated[str, Path(min_length=1, max_length=256)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size (≤ 100).")]
Cursor = Annotated[str | None, Query(max_length=2048, description="`next` of the previous page.")]
Text = Annotated[str | None, Query(min_length=1, max_length=256)]
