"""The import wizard (issue 13, item 4; seed 000): upload, map each column to a profile
key and type (system keys refused, I5), preview the first rows with the cells that would
fail, start, watch the progress, read the counts, download the failed rows; the log.

The mapping and the preview run the importer's own code (`importer.mapping.plan`, the
domain's `ImportDef` and `parse_cells`), so what the preview says fails is what the
import will fail. The upload waits on disk (a draft, private to the signed-in key)
between the steps; drafts older than a day are removed when a new one is made.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from services.domain.imports import (
    BUILTIN_TYPES,
    LEAD_KEYS,
    TOP_LEVEL,
    ImportDef,
    MappingError,
    parse_cells,
    resolve_key,
)
from services.domain.values import PARSERS, Rejected
from services.importer import csvfile
from services.importer.mapping import FAILURE_COLUMNS, plan

from ..i18n import translator
from ..render import page
from ..web import ConsoleRoute, Refused, backend, form_str, require
from .customers import base

router = APIRouter(route_class=ConsoleRoute)

PREVIEW_ROWS = 30  # seed 000: up to 30 rows are shown as sample data
SAMPLES = 3
_DRAFT = re.compile(r"[A-Za-z0-9_-]{20,64}")
_DRAFT_TTL_S = 24 * 3600
_CHUNK = 1 << 20


def drafts_dir(request: Request) -> Path:
    folder: Path = request.app.state.console_drafts
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _draft_path(request: Request, ch: str, token: str) -> Path:
    me = request.state.me
    if not _DRAFT.fullmatch(token) or me is None:
        raise Refused(404, translator(request.state.lang)("error.title"))
    path = drafts_dir(request) / f"{me.id}-{token}.csv"
    if not path.is_file():
        raise Refused(404, translator(request.state.lang)("error.title"))
    return path


@router.get("/c/{ch}/imports")
async def imports(request: Request, ch: str) -> Response:
    require(request, "write", ch)
    return await _upload_page(request, ch)


async def _upload_page(request: Request, ch: str, flashes: list[tuple[str, str]] | None = None, status: int = 200) -> Response:
    log = await backend(request).imports(ch)
    return page(request, "imports/upload.html", {"ch": ch, "section": "imports", "log": log, "flashes": flashes or []}, status)


@router.post("/c/{ch}/imports/upload")
async def upload(request: Request, ch: str) -> Response:
    me = require(request, "write", ch)
    form = await request.form()
    file = form.get("file")
    mode = form_str(form, "mode") or "member"
    key = form_str(form, "key") if mode == "lead" else ""
    _ = translator(request.state.lang)
    if not isinstance(file, UploadFile):
        return await _upload_page(request, ch, [("error", _("imp.refused", reason=_("imp.file")))], 422)
    _sweep(drafts_dir(request))
    token = secrets.token_urlsafe(24)
    path = drafts_dir(request) / f"{me.id}-{token}.csv"
    size = 0
    with path.open("wb") as out:  # streamed: a 100 MB file is never held in memory
        while chunk := await file.read(_CHUNK):
            size += len(chunk)
            if size > csvfile.MAX_BYTES:
                break
            out.write(chunk)
    try:
        if size > csvfile.MAX_BYTES:
            raise csvfile.FileRefused(f"{file.filename}: files up to 100 MB can be imported (I13): split it")
        csvfile.inspect(path)
        csvfile.header(path)
    except csvfile.FileRefused as err:
        path.unlink(missing_ok=True)
        reason = str(err).replace(str(path.name), file.filename or "file")
        return await _upload_page(request, ch, [("error", _("imp.refused", reason=reason))], 422)
    name = quote(file.filename or "upload.csv", safe="")
    return RedirectResponse(
        f"{base(ch)}/imports/drafts/{token}?mode={mode}&key={key}&name={name}", status_code=303
    )


def _sweep(folder: Path) -> None:
    cutoff = time.time() - _DRAFT_TTL_S
    for old in folder.glob("*.csv"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass


def _samples(path: Path, width: int) -> list[list[str]]:
    cols: list[list[str]] = [[] for _ in range(width)]
    for _number, cells in itertools.islice(csvfile.records(path), SAMPLES):
        for i in range(width):
            cols[i].append(cells[i] if i < len(cells) else "")
    return cols


def _default_key(header: str) -> dict[str, str]:
    """A header maps to itself, as `unifier import` does without `--map`; a system key
    (P1, I5) or a failures-file bookkeeping column starts as "do not import", and says why."""
    name = header.strip()
    if not name or name in FAILURE_COLUMNS:
        return {"default": "", "note": ""}
    try:
        resolve_key(name)
    except MappingError as err:
        return {"default": "", "note": err.reason}
    return {"default": name, "note": ""}


def _key_choices(declared: dict[str, str]) -> list[str]:
    keys = [*sorted(TOP_LEVEL), *LEAD_KEYS, *sorted(BUILTIN_TYPES), *sorted(declared)]
    return list(dict.fromkeys(keys))


@router.get("/c/{ch}/imports/drafts/{token}")
async def mapping(request: Request, ch: str, token: str, mode: str = "member", key: str = "", name: str = "") -> Response:
    require(request, "write", ch)
    path = _draft_path(request, ch, token)
    headers = csvfile.header(path)
    declared = await backend(request).declared_types(ch)
    columns = [
        {"i": i, "header": h, "samples": s, **_default_key(h)}
        for i, (h, s) in enumerate(zip(headers, _samples(path, len(headers)), strict=True))
    ]
    ctx = {
        "ch": ch, "section": "imports", "token": token, "mode": mode if mode in ("member", "lead") else "member",
        "key": key, "name": name, "columns": columns, "choices": _key_choices(declared), "types": sorted(PARSERS),
        "declared": declared,
    }
    return page(request, "imports/mapping.html", ctx)


def _maps(form: Any, headers: list[str]) -> list[str]:
    """The form's choices as the CLI's `--map "column=key[:type]"` options."""
    maps = []
    for i, header in enumerate(headers):
        name = header.strip()
        if not name:
            continue
        key = form_str(form, f"key_{i}")
        type_name = form_str(form, f"type_{i}")
        maps.append(f"{name}={key}:{type_name}" if key and type_name else f"{name}={key}")
    return maps


@router.post("/c/{ch}/imports/drafts/{token}/preview")
async def preview(request: Request, ch: str, token: str) -> Response:
    """Plan the mapping exactly as `unifier import` does, then parse the first rows."""
    require(request, "write", ch)
    path = _draft_path(request, ch, token)
    form = await request.form()
    headers = csvfile.header(path)
    mode = form_str(form, "mode")
    lead_key = form_str(form, "key") or None
    blank = form_str(form, "blank") or "keep"
    declared = await backend(request).declared_types(ch)
    maps = _maps(form, headers)
    ctx: dict[str, Any] = {
        "ch": ch, "section": "imports", "token": token, "mode": mode, "key": lead_key or "", "blank": blank,
        "tag": form_str(form, "tag"), "maps": maps, "error": None, "rows": [], "failing": 0,
    }
    try:
        p = plan(headers, maps, mode, lead_key, declared)
        definition = ImportDef.build(ch, "preview", p.mode, p.key, blank, None, p.columns)
    except MappingError as err:
        ctx["error"] = err.reason
        return page(request, "imports/_preview.html", ctx, 422)
    ctx["key"] = p.key if mode == "lead" else ""
    ctx["columns"] = p.columns
    for number, cells in itertools.islice(csvfile.records(path), PREVIEW_ROWS):
        values = {c.key: (cells[i] if i < len(cells) else "") for c, i in zip(p.columns, p.positions, strict=True)}
        bad: dict[str, str] = {}
        try:
            parse_cells(definition, values)
        except Rejected as err:
            failed = getattr(err, "columns", ())
            for k in failed:
                bad[k] = err.reason
        ctx["rows"].append({"number": number, "cells": values, "bad": bad})
        ctx["failing"] += bool(bad)
    return page(request, "imports/_preview.html", ctx)


@router.post("/c/{ch}/imports/drafts/{token}/start")
async def start(request: Request, ch: str, token: str) -> Response:
    me = require(request, "write", ch)
    path = _draft_path(request, ch, token)
    form = await request.form()
    maps = [m for m in form.getlist("map") if isinstance(m, str)]
    started = await backend(request).start_import(
        ch, path, form_str(form, "mode"), form_str(form, "key") or None, maps,
        form_str(form, "blank") or "keep", form_str(form, "tag") or None, me.name,
    )
    _ = translator(request.state.lang)
    if started.import_id is None:
        return await _upload_page(request, ch, [("error", _("imp.refused", reason=started.refused or "?"))], 409)
    return RedirectResponse(f"{base(ch)}/imports/{quote(started.import_id, safe='')}", status_code=303)


@router.get("/c/{ch}/imports/{import_id}")
async def progress_page(request: Request, ch: str, import_id: str) -> Response:
    require(request, "write", ch)
    found = await backend(request).import_progress(ch, import_id)
    if found is None:
        raise Refused(404, translator(request.state.lang)("error.title"))
    return page(request, "imports/progress.html", {"ch": ch, "section": "imports", "imp": found, "import_id": import_id})


@router.get("/c/{ch}/imports/{import_id}/progress")
async def progress(request: Request, ch: str, import_id: str) -> Response:
    require(request, "write", ch)
    found = await backend(request).import_progress(ch, import_id)
    if found is None:
        raise Refused(404, translator(request.state.lang)("error.title"))
    return page(request, "imports/_progress.html", {"ch": ch, "imp": found, "import_id": import_id})


@router.get("/c/{ch}/imports/{import_id}/failures.csv")
async def failures(request: Request, ch: str, import_id: str) -> Response:
    require(request, "write", ch)
    body = await backend(request).import_failures_csv(ch, import_id)
    if body is None:
        raise Refused(404, translator(request.state.lang)("error.title"))
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", import_id)
    return Response(
        body, media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="failures-{safe}.csv"'},
    )

