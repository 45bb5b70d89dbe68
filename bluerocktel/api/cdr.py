"""REST API v1, CDR mediation: pushed batches, file uploads, the file ledger, the quarantine, sources.

=========================================  ==============  ===============================================
route                                      permission      what
=========================================  ==============  ===============================================
``POST /api/v1/cdr/batches``               cdrs:import     JSON records (format ``json-records``), at most
                                                           10,000 per batch (413 beyond); 201 + summary
``POST /api/v1/cdr/files``                 cdrs:import     multipart upload: ``file``, ``source``,
                                                           ``format`` (optional); plain, gzip or zip, at
                                                           most ``BLUEROCKTEL_MAX_CDR_FILE_MB`` (413)
``GET /api/v1/cdr/files``                  cdrs:read       the file ledger, newest first, keyset-paginated
``GET /api/v1/cdr/files/{id}``             cdrs:read       one ledger row
``GET /api/v1/cdr/quarantine``             cdrs:read       quarantined records, newest first
``GET /api/v1/cdr/formats``                cdrs:read       the CDR formats
``GET /api/v1/cdr/sources``                cdrs:read       the sources and their collector's last run
``POST /api/v1/cdr/sources``               cdrs:sources    add a source (201)
``PATCH /api/v1/cdr/sources/{name}``       cdrs:sources    change a source
=========================================  ==============  ===============================================

Customers' tokens get 403 on every route. A push or an upload names a *configured* source
(404 otherwise: sources are configured by staff, never created by a push); a disabled source
refuses them (400). The upload's format is the ``format`` field when sent, else the source's
mapping (custom format), else the source's configured format.

Both POSTs honour ``Idempotency-Key`` (:mod:`bluerocktel.api.idempotency`). Without a key a
retried push is still harmless: every push is its own ledger entry and its records already in
the lake are counted as ``duplicates``; a re-uploaded file (same bytes) is a ``duplicate`` file.

Authentication (:func:`bluerocktel.api.routes.current_principal`) commits in a short
transaction of its own, so the token's ``last_used_at`` write never holds SQLite's write lock
while the importer writes.

Request size: a batch body is refused past :data:`MAX_BATCH_BYTES`, an upload past the
setting plus :data:`MULTIPART_SLACK_BYTES`, from its ``Content-Length`` before it is read, or
while it streams (:class:`BodyLimitRoute`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Callable

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.routing import APIRoute
from sqlalchemy import select
from starlette.requests import Request as StarletteRequest

from bluerocktel.api.idempotency import IdempotencyDep
from bluerocktel.api.routes import Cursor, Limit, ObjectId, current_principal, keyset_page, require
from bluerocktel.api.schemas import (
    CdrBatchIn,
    CdrFileOut,
    CdrFormatOut,
    CdrSourceIn,
    CdrSourceOut,
    CdrSourcePatch,
    ImportSummaryOut,
    Page,
    QuarantinedRecordOut,
    QuarantinePageOut,
)
from bluerocktel.db.models import CdrFile
from bluerocktel.errors import NotFoundError
from bluerocktel.portal import (
    CdrSourceExistsError,
    create_cdr_source,
    import_cdr_upload,
    latest_quarantine,
    list_cdr_sources,
    max_upload_bytes,
    push_cdr_batch,
    update_cdr_source,
)
from bluerocktel.security import Principal
from bluerocktel.vocabulary import Collector

MAX_BATCH_RECORDS = 10_000
MAX_BATCH_BYTES = 64 << 20
MULTIPART_SLACK_BYTES = 64 << 10      # multipart headers and boundaries around the file


class BodyLimitRoute(APIRoute):
    """A route whose endpoint may carry ``max_body_bytes`` (a function giving the limit, read at
    each request): a larger ``Content-Length`` is refused before the body is read, and a body
    streaming past the limit is cut off; both answer a 413 problem."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        limit_of = getattr(self.endpoint, "max_body_bytes", None)
        if limit_of is None:
            return handler

        async def limited(request: StarletteRequest):
            limit = limit_of()
            refused = HTTPException(413, detail=f"the request body is larger than {limit:,} bytes")
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                raise refused
            seen = 0
            receive = request.receive

            async def counted():
                nonlocal seen
                message = await receive()
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise refused
                return message

            return await handler(StarletteRequest(request.scope, counted))

        return limited


def body_limit(limit: Callable[[], int]):
    def mark(endpoint):
        endpoint.max_body_bytes = limit
        return endpoint
    return mark


router = APIRouter(prefix="/cdr", tags=["cdr"], route_class=BodyLimitRoute)   # under /api/v1

_PROBLEMS = {401: {"description": "missing, invalid or revoked token"},
             403: {"description": "the token's role may not do this (customers never may)"}}
_WRITE_PROBLEMS = {**_PROBLEMS,
                   400: {"description": "refused input: unknown format, unreadable file, disabled source..."},
                   404: {"description": "unknown CDR source"},
                   409: {"description": "a request with this Idempotency-Key is still being processed"},
                   413: {"description": "too many records or too large a body"},
                   422: {"description": "invalid request, or Idempotency-Key reused with a different request"}}


Caller = Annotated[Principal, Depends(current_principal)]


# --- pushing and uploading ----------------------------------------------------------------------

@router.post("/batches", status_code=201, response_model=ImportSummaryOut, responses=_WRITE_PROBLEMS)
@body_limit(lambda: MAX_BATCH_BYTES)
def push_batch(batch: CdrBatchIn, principal: Caller, idempotency: IdempotencyDep, request: Request):
    """Import a batch of CDRs pushed as JSON records (format ``json-records``; see ``GET /cdr/formats``).

    Each record is an object with the fields ``start`` (required), ``answer``, ``end``,
    ``duration`` (``end`` or ``duration`` required), ``billsec``, ``caller``, ``callee``,
    ``account_code``, ``channel``, ``dst_channel``, ``disposition``, ``direction``, ``call_type``,
    ``units``, ``unique_id``; times are ISO-8601, with an offset or in the source's time zone.
    Bad records are quarantined (``issues``: record number and reason), never the whole batch.
    Records already imported (same source and ``unique_id``) count as ``duplicates``.
    """
    require(principal, "cdrs:import")
    if len(batch.records) > MAX_BATCH_RECORDS:
        raise HTTPException(413, detail=f"{len(batch.records):,} records in one batch; at most "
                                        f"{MAX_BATCH_RECORDS:,}: split it")
    wb = request.app.state.wb

    def work():
        summary = push_cdr_batch(wb, batch.source, batch.records, actor=principal.email)
        return ImportSummaryOut.of(summary)

    return idempotency.run(wb, principal, work, status_code=201)


@router.post("/files", status_code=201, response_model=ImportSummaryOut, responses=_WRITE_PROBLEMS)
@body_limit(lambda: max_upload_bytes() + MULTIPART_SLACK_BYTES)
def upload_file(principal: Caller, idempotency: IdempotencyDep, request: Request,
                file: Annotated[UploadFile, File(description="the CDR file: plain, gzip or zip")],
                source: Annotated[str, Form(description="name of a configured CDR source")],
                format: Annotated[str | None, Form(description="a CDR format name; default: the source's "
                                                               "mapping, else its format")] = None):
    """Import one uploaded CDR file (the ledger dedups files by SHA-256, the lake records by id)."""
    require(principal, "cdrs:import")
    wb = request.app.state.wb

    def work():
        with tempfile.TemporaryDirectory(prefix="brt-upload-") as folder:
            path = Path(folder) / "upload"
            with open(path, "wb") as out:
                file.file.seek(0)
                shutil.copyfileobj(file.file, out, 1 << 20)
            summary = import_cdr_upload(wb, source=source, file_name=file.filename or "upload", path=path,
                                        format=format or None, actor=principal.email,
                                        collector=Collector.API.value)
        return ImportSummaryOut.of(summary)

    if file.size is not None and file.size > max_upload_bytes():
        raise HTTPException(413, detail=f"{file.filename}: {file.size:,} bytes, larger than "
                                        f"BLUEROCKTEL_MAX_CDR_FILE_MB ({max_upload_bytes() >> 20} MiB)")
    return idempotency.run(wb, principal, work, status_code=201)


# --- the ledger and the quarantine --------------------------------------------------------------

@router.get("/files", response_model=Page[CdrFileOut], responses=_PROBLEMS)
def list_files(principal: Caller, request: Request, limit: Limit = 50, cursor: Cursor = None,
               source: Annotated[str | None, Query(description="only this source's files")] = None,
               status: Annotated[str | None, Query(description="only files in this status")] = None):
    """The file ledger (files and pushed batches), newest first."""
    require(principal, "cdrs:read")
    query = select(CdrFile)
    if source is not None:
        query = query.where(CdrFile.source == source)
    if status is not None:
        query = query.where(CdrFile.status == status)
    with request.app.state.wb.db.session() as session:
        return keyset_page(session, query, CdrFile, CdrFileOut, cursor, limit, newest_first=True)


@router.get("/files/{file_id}", response_model=CdrFileOut, responses={**_PROBLEMS, 404: {"description": "no such file"}})
def get_file(file_id: ObjectId, principal: Caller, request: Request):
    """One row of the file ledger: counts, timings, status, error."""
    require(principal, "cdrs:read")
    with request.app.state.wb.db.session() as session:
        row = session.get(CdrFile, file_id)
        if row is None:
            raise NotFoundError(f"no CDR file {file_id}")
        return CdrFileOut.of(row)


@router.get("/quarantine", response_model=QuarantinePageOut, responses=_PROBLEMS)
def list_quarantine(principal: Caller, request: Request,
                    limit: Annotated[int, Query(ge=1, le=500, description="page size")] = 50,
                    offset: Annotated[int, Query(ge=0, description="records to skip")] = 0,
                    source: Annotated[str | None, Query(description="only this source's records")] = None,
                    file: Annotated[str | None, Query(description="only the records of this file")] = None,
                    include_resolved: Annotated[bool, Query(description="also records reprocessed since")] = False):
    """Records that could not be imported, newest first: file, line (or record number), reason, raw."""
    require(principal, "cdrs:read")
    page = latest_quarantine(request.app.state.wb, source=source, file=file, offset=offset, limit=limit,
                             include_resolved=include_resolved)
    return QuarantinePageOut(items=[QuarantinedRecordOut(**row) for row in page.rows], total=page.total,
                             offset=page.offset, limit=page.limit)


@router.get("/formats", response_model=list[CdrFormatOut], responses=_PROBLEMS)
def list_formats(principal: Caller):
    """The CDR formats files may be uploaded in."""
    from bluerocktel.mediation import FORMATS

    require(principal, "cdrs:read")
    return [CdrFormatOut(**FORMATS[name].as_dict()) for name in sorted(FORMATS)]


# --- sources ------------------------------------------------------------------------------------

@router.get("/sources", response_model=list[CdrSourceOut], responses=_PROBLEMS)
def list_sources(principal: Caller, request: Request):
    """Every CDR source by name, with its collector's last run (URLs without passwords)."""
    require(principal, "cdrs:read")
    return [CdrSourceOut.of(row) for row in list_cdr_sources(request.app.state.wb)]


@router.post("/sources", status_code=201, response_model=CdrSourceOut,
             responses={**_WRITE_PROBLEMS, 409: {"description": "a source of that name exists already"}})
def create_source(body: CdrSourceIn, principal: Caller, request: Request):
    """Add a CDR source: a format or a TOML mapping, a collector URL (or none: pushed/uploaded CDRs),
    time zone, country, collector options. A password in the URL is refused: name the environment
    variable holding it in ``options.password_env``."""
    require(principal, "cdrs:sources")
    try:
        row = create_cdr_source(request.app.state.wb, actor=principal.email, **body.model_dump())
    except CdrSourceExistsError as exc:
        raise HTTPException(409, detail=str(exc)) from None
    return CdrSourceOut.of(row)


@router.patch("/sources/{name}", response_model=CdrSourceOut, responses=_WRITE_PROBLEMS)
def change_source(name: str, body: CdrSourcePatch, principal: Caller, request: Request):
    """Change a source's fields (only those sent): enabled, options, mapping, format, url, timezone,
    country, poll_interval_s. A null mapping removes it (give a format then)."""
    require(principal, "cdrs:sources")
    changes = body.model_dump(exclude_unset=True)
    for key in ("format", "timezone", "country", "options", "poll_interval_s", "enabled"):
        if key in changes and changes[key] is None:
            raise HTTPException(422, detail=f"{key} cannot be null")
    return CdrSourceOut.of(update_cdr_source(request.app.state.wb, name, changes, actor=principal.email))
