"""CSV imports over HTTP (I12-I17), sharing the importer with `unifier import`: the
upload is streamed to a file on disk (never held in memory), checked and named, the
channel's import lock taken — every refusal answered at once (409 another import
runs, 422 the rest) — then published and awaited in the background while
`GET …/imports/{importId}` shows the progress."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from services.importer import csvfile
from services.importer.failures import write_failures_file
from services.importer.run import (
    Import,
    ImportBusy,
    ImportRefused,
    ImportRequest,
    complete_and_log,
    start_import,
)
from services.store import import_log

from ..auth import Pool, Reader, Writer
from ..models import problems
from ..params import Channel
from ..problems import Problem

log = logging.getLogger("unifier.api")

router = APIRouter(prefix="/v1/channels/{ch}/imports", tags=["imports"])

ImportId = Annotated[str, PathParam(min_length=1, max_length=128)]
_FORM_SLACK = 64 * 1024  # multipart framing and the other fields around the file
_CHUNK = 1 << 20

_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "mode"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The CSV file (UTF-8, ≤ 100 MB)."},
                        "mode": {"type": "string", "enum": ["member", "lead"]},
                        "key": {"type": "string", "enum": ["email", "mobileNumber"]},
                        "map": {"type": "array", "items": {"type": "string"}, "description": "`CSV column=key[:type]`"},
                        "blank": {"type": "string", "enum": ["keep", "clear"], "default": "keep"},
                        "tag": {"type": "string"},
                    },
                }
            }
        },
    }
}


class _Form:
    """The fields of `unifier import`, from the multipart form."""

    FIELDS = ("file", "mode", "key", "map", "blank", "tag")

    def __init__(self, form: Any) -> None:
        unknown = sorted(set(form.keys()) - set(self.FIELDS))
        errors = [{"field": f"body.{k}", "message": "unknown field"} for k in unknown]
        self.file = form.get("file")
        if not isinstance(self.file, UploadFile):
            errors.append({"field": "body.file", "message": "the CSV file is required (a file part named `file`)"})
        self.mode = self._choice(form, "mode", ("member", "lead"), None, errors, required=True)
        self.key = self._choice(form, "key", ("email", "mobileNumber"), None, errors)
        self.blank = self._choice(form, "blank", ("keep", "clear"), "keep", errors)
        self.tag = self._text(form, "tag", errors)
        self.maps = tuple(m for m in form.getlist("map") if isinstance(m, str))
        if len(self.maps) != len(form.getlist("map")):
            errors.append({"field": "body.map", "message": "must be text"})
        if errors:
            raise Problem(422, "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)

    @staticmethod
    def _text(form: Any, name: str, errors: list[dict[str, str]]) -> str | None:
        values = form.getlist(name)
        if not values:
            return None
        if len(values) > 1 or not isinstance(values[0], str):
            errors.append({"field": f"body.{name}", "message": "must be given once, as text"})
            return None
        return str(values[0])

    @classmethod
    def _choice(
        cls, form: Any, name: str, allowed: tuple[str, ...], default: str | None, errors: list[dict[str, str]],
        *, required: bool = False,
    ) -> Any:
        value = cls._text(form, name, errors)
        if value is None:
            if required:
                errors.append({"field": f"body.{name}", "message": "is required"})
            return default
        if value not in allowed:
            errors.append({"field": f"body.{name}", "message": f"must be one of {', '.join(allowed)}"})
        return value


def _file_name(upload: UploadFile) -> str:
    """The uploaded file's own name (the import log shows it), without any path."""
    name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return "".join(c for c in name if c.isprintable())[:200] or "upload.csv"


@router.post("", status_code=202, openapi_extra=_UPLOAD_SCHEMA, responses=problems(409, 413, 422))
async def upload(request: Request, ch: Channel, pool: Pool, who: Writer) -> JSONResponse:
    """Start an import: `file` plus the options of `unifier import` (`mode`, `key`,
    `map` repeated, `blank`, `tag`). 202 `{"importId"}` once the file is accepted and
    the channel's import lock taken; the rows are then published in the background."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > csvfile.MAX_BYTES + _FORM_SLACK:
        raise Problem(422, "the file is larger than 100 MB; files up to 100 MB can be imported (I13): split it")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise Problem(422, "send the file as multipart/form-data (a file part named `file`)")
    try:
        form = await request.form(max_files=1, max_fields=64)
    except Exception as err:  # malformed multipart: the parser's own message
        raise Problem(422, f"unreadable multipart body: {getattr(err, 'detail', err)}") from None
    folder = Path(tempfile.mkdtemp(prefix="unifier-upload-"))
    try:
        fields = _Form(form)
        assert isinstance(fields.file, UploadFile)
        path = folder / _file_name(fields.file)
        await _save(fields.file, path)
        req = ImportRequest(
            path=path, channel=ch, mode=fields.mode, key=fields.key, maps=fields.maps, blank=fields.blank,
            tag=fields.tag, actor=who.name,
        )
        app = request.app
        try:
            started = await start_import(app.state.settings, req, pool, app.state.settings.kafka_bootstrap)
        except ImportBusy as err:
            raise Problem(409, str(err)) from None
        except ImportRefused as err:
            raise Problem(422, str(err)) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        await form.close()
    task = asyncio.create_task(_complete(started, folder), name=f"import {started.import_id}")
    imports: set[asyncio.Task[None]] = app.state.imports
    imports.add(task)
    task.add_done_callback(imports.discard)
    return JSONResponse(
        {"importId": started.import_id}, status_code=202,
        headers={"Location": f"/v1/channels/{quote(ch, safe='')}/imports/{started.import_id}"},
    )


async def _save(upload: UploadFile, path: Path) -> None:
    """Copy the upload (spooled to disk by the multipart parser past 1 MB) in chunks."""
    written = 0
    with path.open("wb") as out:
        while chunk := await upload.read(_CHUNK):
            written += len(chunk)
            if written > csvfile.MAX_BYTES:
                raise Problem(422, f"{path.name} is larger than 100 MB; files up to 100 MB can be imported (I13): split it")
            await asyncio.to_thread(out.write, chunk)


async def _complete(started: Import, folder: Path) -> None:
    """Publish and wait; the outcome is in the import log either way."""
    try:
        await complete_and_log(started)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@router.get("", responses=problems(422))
async def import_log_(ch: Channel, pool: Pool, _: Reader) -> dict[str, Any]:
    """The import log (I15, I16), newest first."""
    now = int(time.time() * 1000)
    return {"items": [import_log.log_entry(r, now) for r in await import_log.list_imports(pool, ch)]}


@router.get("/{importId}", responses=problems(404, 422))
async def import_progress(ch: Channel, importId: ImportId, pool: Pool, _: Reader) -> dict[str, Any]:
    """`{"state","rows","applied","created","updated","failed"}`; state `running`,
    `finished`, `abandoned` or `timed_out`."""
    found = await import_log.progress(pool, ch, importId)
    if found is None:
        raise Problem(404, f"no import {importId!r} in channel {ch!r}")
    return found


@router.get(
    "/{importId}/failures.csv", responses={**problems(404, 410, 422), 200: {"content": {"text/csv": {}}}},
    response_class=FileResponse,
)
async def failures_csv(ch: Channel, importId: ImportId, pool: Pool, _: Reader) -> FileResponse:
    """The failed rows (I15) as the CLI writes them: fix them and import the file again."""
    record = await import_log.import_record(pool, ch, importId)
    if record is None:
        raise Problem(404, f"no import {importId!r} in channel {ch!r}")
    finished = record["finished_at"]
    if finished is not None and finished + import_log.FAILURES_KEPT_MS <= int(time.time() * 1000):
        raise Problem(410, "failed rows are kept 30 days after the import finished (I15); they are gone")
    keys = [c["key"] for c in record["columns"]]
    # The CLI's own writer, into a file streamed back and then deleted: one format.
    folder = Path(tempfile.mkdtemp(prefix="unifier-failures-"))
    path = folder / f"{importId}-failures.csv"
    try:
        await write_failures_file(pool, ch, importId, keys, path)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(
        path, media_type="text/csv; charset=utf-8", filename=path.name,
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )
