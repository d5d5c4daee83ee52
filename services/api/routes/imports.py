"""CSV imports over HTTP (I12-I17): upload, progress, failures.csv, the import log."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1/channels/{ch}/imports", tags=["imports"])
