"""An archived ticket's file: where it lives under the archive folder, and reading it back checked
against the checksum recorded when it was written."""

import asyncio
import gzip
import hashlib
import re
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname
from uuid import UUID

import msgspec

from services.eventstore import db

FORMAT = "soc-ticketing-archive/1"


class ArchiveEntry(msgspec.Struct):
    ticket_id: UUID
    oid: str
    ticket_number: int
    status: str
    severity: str
    created_at: datetime
    events: int
    location: str
    sha256: str
    bytes: int
    archived_at: datetime
    archived_by: str


_PLAIN_ORG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def archive_file(folder: Path, oid: str, ticket_id: UUID) -> Path:
    """Where a ticket's archive goes: under its org's folder, always inside `folder`. An org id is
    whatever a detection said (`../x`, `/etc`, a backslash); only a plain one names its folder
    itself, any other is named by its hash (a leading `_`, which no plain name has)."""
    plain = _PLAIN_ORG.fullmatch(oid) is not None  # no separator, and not "." or ".."
    name = oid if plain else "_" + hashlib.sha256(oid.encode()).hexdigest()[:32]
    return folder / name / f"{ticket_id}.json.gz"


def archive_path(location: str) -> Path | None:
    """The file a recorded location names (`Path.as_uri()` percent-encodes, so a folder with a
    space or an accent needs decoding back), or None for a location that is not a file."""
    parts = urlsplit(location)
    return Path(url2pathname(parts.path)) if parts.scheme == "file" else None


def write(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)


async def list_archive(conn: db.Connection, oids: list[str], limit: int) -> list[ArchiveEntry]:
    rows = await conn.fetch(
        "SELECT l.ticket_id, l.oid, l.ticket_number, a.status, a.severity, a.created_at, l.events,"
        " l.location, l.sha256, l.bytes, l.archived_at, l.archived_by"
        " FROM archive_log l JOIN archived_tickets a USING (ticket_id)"
        " WHERE l.oid = ANY($1::text[]) ORDER BY l.archived_at DESC, l.ticket_number DESC LIMIT $2",
        oids,
        limit,
    )
    return [ArchiveEntry(*r) for r in rows]


class ArchiveDamaged(Exception):
    pass


class ArchivePurged(Exception):
    def __init__(self, number: int, purged_at: datetime) -> None:
        super().__init__(f"archived ticket {number} was purged on {purged_at.date()}, after two years")


async def read_archive(conn: db.Connection, oid: str, number: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT location, sha256, purged_at FROM archive_log WHERE oid = $1 AND ticket_number = $2",
        oid,
        number,
    )
    if row is None:
        return None
    location, digest, purged_at = row
    if purged_at is not None:
        raise ArchivePurged(number, purged_at)
    path = archive_path(location)
    if path is None:
        raise ArchiveDamaged(f"unsupported archive location {location}")
    blob = await asyncio.to_thread(path.read_bytes)
    if hashlib.sha256(blob).hexdigest() != digest:
        raise ArchiveDamaged(f"archive of ticket {number} does not match its recorded checksum")
    document: dict[str, Any] = msgspec.json.decode(gzip.decompress(blob))
    return document
