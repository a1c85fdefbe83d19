"""Evidence files on a ticket: upload (streamed into the evidence store), download (always as an
attachment, with Range), and a ticket's export, as JSON or, `with_data=true`, as a streamed
`.tar.gz` holding the record, its detections, the kept telemetry events and the stored files.
"""

import asyncio
import base64
import io
import logging
import tarfile
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar

import msgspec
from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from domain import events as ev
from domain.commands import AddArtifact
from domain.errors import DuplicateItem
from domain.evidence import Artifact
from domain.limits import TEXT_MAX
from projections import ticket_queries as q
from services.api import params
from services.api.context import HANDLER
from services.api.databases import pool_of
from services.api.dispatch import context_of
from services.api.errors import ApiError, invalid, not_found
from services.api.lookup import config_of, oid_of, ticket_id_or_404
from services.api.orgs import EVIDENCE
from services.api.responses import json_response
from services.api.schemas import TicketWithEvents
from services.api.tickets import read_ticket
from services.commands.handlers import execute_one
from services.evidence.store import CHUNK, EvidenceStore, TooLarge

log = logging.getLogger(__name__)

NAME_MAX: Final = 255
# What aiohttp's multipart reader raises on a body that is not well-formed multipart
MALFORMED: Final = (ValueError, HttpProcessingError)
_json = msgspec.json.Encoder()
T = TypeVar("T")
_SAFE_NAME: Final = str.maketrans({c: "_" for c in '/\\\x00"\r\n'})


async def _next(reader: MultipartReader) -> BodyPartReader | MultipartReader | None:
    try:
        return await reader.next()
    except MALFORMED as exc:  # a part's headers that are not a part's headers
        raise ApiError(400, f"the multipart body is malformed: {exc}", field="file") from None


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


async def _text(part: BodyPartReader, name: str, limit: int) -> str:
    """A text part, read no further than its limit allows (4 bytes a character at most)."""
    raw = bytearray()
    while chunk := await part.read_chunk(CHUNK):
        raw += chunk
        if len(raw) > 4 * limit:
            break
    value = raw.decode(errors="replace")
    if len(value) > limit:
        raise invalid(name, f"{name} has at most {limit} characters")
    return value


async def upload_artifact(request: web.Request) -> web.Response:
    """`multipart/form-data` with a `file` part (and `artifact_type`, `description` before it, if
    given). The file is streamed to the store while its SHA-256 is computed; then one
    `artifact_added` event records its name, size, media type and digest."""
    oid = oid_of(request)
    config = await config_of(request)
    ticket_id = await ticket_id_or_404(request)  # a ticket it cannot see: 404 before a byte is read
    if not request.content_type.startswith("multipart/form-data"):
        raise ApiError(415, "an upload is multipart/form-data with a `file` part", field="file")
    store = request.app[EVIDENCE]
    fields: dict[str, str] = {}
    artifact: Artifact | None = None
    new = False
    try:
        reader = await request.multipart()
    except ValueError as exc:  # no boundary, say
        raise ApiError(400, f"the body is not multipart/form-data: {exc}", field="file") from None
    while (part := await _next(reader)) is not None:
        if not isinstance(part, BodyPartReader):
            raise invalid("file", "a nested multipart body is not an upload")
        if part.name in ("artifact_type", "description"):
            fields[part.name] = await _text(part, part.name, 64 if part.name == "artifact_type" else TEXT_MAX)
        elif part.name == "file" and artifact is None:
            name = (part.filename or "upload").translate(_SAFE_NAME)[-NAME_MAX:] or "upload"
            media_type = (part.headers.get("Content-Type") or "application/octet-stream")[:255]
            try:
                stored = await store.put(oid, _chunks(part), config.max_upload_bytes)
            except TooLarge as exc:
                raise ApiError(
                    413, f"the file is over this org's max_upload_bytes ({exc.limit} bytes)", field="file"
                ) from None
            except MALFORMED as exc:  # (nothing was kept: the store removes what it began)
                raise ApiError(400, f"the multipart body is malformed: {exc}", field="file") from None
            new = stored.new
            artifact = Artifact(
                uuid.uuid4(),
                fields.get("artifact_type") or "file",
                fields.get("description"),
                name=name,
                size=stored.size,
                media_type=media_type,
                sha256=stored.sha256,
            )
        else:
            await part.release()
    if artifact is None:
        raise invalid("file", "the form has no `file` part")
    kept = artifact

    try:
        command = AddArtifact(ticket_id, kept, config.max_artifacts_per_ticket)
        outcome = await execute_one(pool_of(request), request.app[HANDLER], command, context_of(request))
    except DuplicateItem:
        raise  # the same file is on this ticket: the stored file is that artifact's (409)
    except BaseException:
        if new and kept.sha256:  # nothing recorded: a file stored for this upload alone goes
            await store.delete(oid, kept.sha256)
        raise
    [event] = outcome.events
    assert isinstance(event, ev.ArtifactAdded)
    return json_response(event.artifact, status=201)


def _attachment_name(name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_").translate(_SAFE_NAME)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


async def artifact_content(request: web.Request) -> web.StreamResponse:
    """The file, never rendered: an attachment of type application/octet-stream, nosniff, a
    sandboxing CSP; one Range as HTTP has it (the digest is the strong ETag that `If-Range` names);
    the SHA-256 in `X-Content-SHA256` (hex) and `Repr-Digest` (RFC 9530)."""
    oid = oid_of(request)
    artifact = await _artifact_of(request)
    if artifact is None or artifact.sha256 is None:
        raise not_found("no uploaded file of that artifact on this ticket")
    store, sha = request.app[EVIDENCE], artifact.sha256
    size = await store.size(oid, sha)
    if size is None:
        raise not_found("the file of that artifact is not in the evidence store")
    etag = f'"{sha}"'
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": _attachment_name(artifact.name or f"{artifact.artifact_id}.bin"),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "X-Content-SHA256": sha,
        "Repr-Digest": f"sha-256=:{base64.b64encode(bytes.fromhex(sha)).decode()}:",
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-store",
    }
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    start, stop, status = 0, size, 200
    if "Range" in request.headers and request.headers.get("If-Range", etag) == etag:
        try:
            asked = request.http_range
        except ValueError:
            asked = slice(size, None)  # (answered below as not satisfiable)
        if asked.start is not None:
            start = max(0, size + asked.start) if asked.start < 0 else asked.start
            stop = size if asked.stop is None else min(asked.stop, size)
            if start >= size:
                return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = stop - start
    await response.prepare(request)
    async for chunk in store.read(oid, sha, start, stop):
        await response.write(chunk)
    await response.write_eof()
    return response


async def _artifact_of(request: web.Request) -> Artifact | None:
    """The artifact as the ticket's events record it: an active ticket's, else an archived one's
    (its files stay readable for the archive's two years)."""
    try:
        artifact_id = uuid.UUID(request.match_info["artifact_id"])
    except ValueError:
        raise invalid("artifact_id", "artifact_id must be a UUID") from None
    oid = oid_of(request)
    number = params.ticket_number(request.match_info["number"])
    async with pool_of(request).acquire() as conn:
        ticket_id = await conn.fetchval(
            "SELECT ticket_id FROM ticket_index WHERE oid = $1 AND ticket_number = $2"
            " UNION ALL SELECT ticket_id FROM archive_log WHERE oid = $1 AND ticket_number = $2"
            " AND purged_at IS NULL LIMIT 1",
            oid,
            number,
        )
        if ticket_id is None:
            raise not_found(f"ticket {number} not found")
        state = await q.state_of(conn, ticket_id)
    return None if state is None else state.artifacts.get(artifact_id)


async def export_ticket(request: web.Request) -> web.StreamResponse:
    """The ticket with its timeline and evidence, as the seed's CLI writes `ticket.json`; with
    `with_data=true` a `.tar.gz` of that and `detections/`, `telemetry/` (the kept events) and
    `artifacts/` (the stored files), streamed; what is missing is listed in `warnings.json`."""
    with_data = params.choice(request.query, "with_data", ("", "false", "true"), "") == "true"
    body = await read_ticket(request, evidence=True)
    if not with_data:
        return json_response(body)
    oid, number = oid_of(request), body.ticket.ticket_number
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/gzip",
            "Content-Disposition": _attachment_name(f"ticket-{oid}-{number}.tar.gz"),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
        }
    )
    await response.prepare(request)
    await _write_tarball(response, body, request.app[EVIDENCE], oid, number)
    await response.write_eof()
    return response


class _Pipe(io.RawIOBase):
    """What tarfile writes (in a thread) goes to the response (on the loop), a chunk at a time:
    the archive is never held whole, and a slow client slows the writing down."""

    def __init__(self, send: Callable[[bytes], None]) -> None:
        self.send = send

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.send(bytes(data))
        return len(data)


class _Chunks(io.RawIOBase):
    """A stored file as tarfile reads it (in its thread): the store's chunks, fetched on the loop."""

    def __init__(self, chunks: AsyncIterator[bytes], on_loop: Callable[[Awaitable[bytes]], bytes]) -> None:
        self.chunks, self.on_loop, self.left = chunks, on_loop, b""

    def readable(self) -> bool:
        return True

    def readinto(self, into: Any) -> int:
        if not self.left:
            self.left = self.on_loop(anext(self.chunks, b""))
        n = min(len(into), len(self.left))
        into[:n], self.left = self.left[:n], self.left[n:]
        return n


async def _awaited(aw: Awaitable[T]) -> T:
    return await aw


async def _write_tarball(
    response: web.StreamResponse, export: TicketWithEvents, store: EvidenceStore, oid: str, number: int
) -> None:
    loop = asyncio.get_running_loop()

    def on_loop(aw: Awaitable[T]) -> T:
        """Awaited on the loop from tarfile's thread (a write to the response, a read of the store)."""
        return asyncio.run_coroutine_threadsafe(_awaited(aw), loop).result()

    def build() -> None:
        root = f"ticket-{oid}-{number}"
        now = time.time()
        warnings: list[dict[str, str]] = []

        def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size, info.mtime, info.mode = len(data), int(now), 0o644
            tar.addfile(info, io.BytesIO(data))

        detections, telemetry, artifacts = (export.detections, export.telemetry, export.artifacts)
        assert isinstance(detections, list) and isinstance(telemetry, list) and isinstance(artifacts, list)
        buffered = io.BufferedWriter(_Pipe(lambda data: on_loop(response.write(data))), CHUNK)
        with tarfile.open(fileobj=buffered, mode="w|gz") as tar:
            add_bytes(tar, "ticket.json", _json.encode(export))
            for d in detections:
                add_bytes(tar, f"detections/{_file_name(d.detection_id)}.json", _json.encode(d))
            for t in telemetry:
                if t.event is None:
                    warnings.append({"telemetry_id": str(t.telemetry_id), "warning": "no event was kept"})
                    continue
                add_bytes(tar, f"telemetry/{t.telemetry_id}.json", _json.encode(t.event))
            for a in artifacts:
                if a.sha256 is None:
                    warnings.append({"artifact_id": str(a.artifact_id), "warning": "a reference, no file"})
                    continue
                size = on_loop(store.size(oid, a.sha256))
                if size is None:
                    warnings.append(
                        {"artifact_id": str(a.artifact_id), "warning": "not in the evidence store"}
                    )
                    continue
                info = tarfile.TarInfo(f"{root}/artifacts/{a.artifact_id}/{_file_name(a.name or 'file')}")
                info.size, info.mtime, info.mode = size, int(now), 0o644
                tar.addfile(info, io.BufferedReader(_Chunks(store.read(oid, a.sha256), on_loop), CHUNK))
            if warnings:
                add_bytes(tar, "warnings.json", _json.encode(warnings))
        buffered.flush()  # (tarfile leaves a file object it was given open)

    await asyncio.to_thread(build)


def _file_name(name: str) -> str:
    cleaned = name.translate(_SAFE_NAME).lstrip(".") or "file"
    return cleaned[:NAME_MAX]
