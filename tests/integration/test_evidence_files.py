"""Evidence files (issue 35) on a real database: an upload is stored under its SHA-256 and recorded
by one artifact_added event; the same file again on the ticket is a 409; over the org's limit a
413 naming it, and nothing kept; the download is an attachment with its digest and Range; a
telemetry reference keeps the full event within its limit; the export holds every part, checked
file by file against the API; files are per org; an archived ticket's files stay readable; an
org purge leaves nothing of the org in the store. Each test runs on both stores: the local folder
and an S3-compatible bucket (a real server, `rclone serve s3`)."""

import asyncio
import hashlib
import io
import json
import os
import tarfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from projections.registry import all_projections
from services.auth.tokens import TokenService
from services.commands.configs import load_configs
from services.commands.org_purge import purge_org
from services.eventstore import db
from services.eventstore.subscription import catch_up
from services.evidence.s3 import PART, S3Store
from services.evidence.store import EvidenceStore, LocalStore
from services.scheduler.retention import purge_archives, run_retention
from tests.conftest import Client, bearer
from tests.integration.s3_server import s3_server
from tests.integration.support import configure, ingest, lc, serve

PERMS = ["investigation.get", "investigation.set"]


def form(data: bytes, name: str, media_type: str = "application/octet-stream") -> aiohttp.FormData:
    f = aiohttp.FormData()
    f.add_field("artifact_type", "memory_dump")
    f.add_field("file", data, filename=name, content_type=media_type)
    return f


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EvidenceStore]:
    if request.param == "local":
        yield LocalStore(tmp_path / "evidence")
        return
    async with s3_server(tmp_path / "s3", prefix="soc/") as settings:
        s3 = S3Store(settings)
        yield s3
        await s3.close()


async def held(store: EvidenceStore, oid: str) -> set[str]:
    """Everything the store holds for the org, begun uploads and temporary files included."""
    if isinstance(store, LocalStore):
        folder = store.root / oid
        return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert isinstance(store, S3Store)
    s3, prefix = await store._s3(), f"{store.settings.prefix}{oid}/"
    listed = await s3.list_objects_v2(Bucket=store.bucket, Prefix=prefix)
    return {o["Key"].removeprefix(prefix) for o in listed.get("Contents", [])} | {
        "upload:" + u["Key"].removeprefix(prefix) for u in await store.uploads(prefix)
    }


async def read_back(store: EvidenceStore, oid: str, sha: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(oid, sha)])


async def project(pool: db.Pool) -> None:
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)


async def events_of(pool: db.Pool, kind: str, oid: str) -> int:
    async with pool.acquire() as conn:
        n: int = await conn.fetchval(
            "SELECT count(*) FROM events WHERE type = $1 AND metadata->>'oid' = $2", kind, oid
        )
        return n


async def test_upload_download_range_duplicate_limit_telemetry_and_export(
    pool: db.Pool, tokens: TokenService, store: EvidenceStore
) -> None:
    client: Client = await serve(pool, tokens, evidence=store)
    org, other_org = f"files-a-{type(store).__name__}", f"files-b-{type(store).__name__}"
    await ingest(pool, [lc(org, 1, cat="files-one"), lc(other_org, 1, cat="files-other")])
    await project(pool)
    auth = bearer(tokens.mint("ana@x", {org: PERMS}, ttl_s=600))
    other = bearer(tokens.mint("bo@x", {other_org: PERMS}, ttl_s=600))
    data = os.urandom(PART + 3 * 1024 * 1024 + 17)  # several chunks and parts, not a multiple of one
    sha = hashlib.sha256(data).hexdigest()
    try:
        r = await client.post(
            f"/api/v1/tickets/1/artifacts/upload?oid={org}", data=form(data, "mem.raw"), headers=auth
        )
        assert r.status == 201, await r.text()
        artifact: dict[str, Any] = await r.json()
        assert (artifact["name"], artifact["size"], artifact["sha256"]) == ("mem.raw", len(data), sha)
        assert (
            artifact["artifact_type"] == "memory_dump"
            and artifact["media_type"] == "application/octet-stream"
        )
        # content-addressed, in the org's folder, and nothing left half-way
        assert await held(store, org) == {f"{sha[:2]}/{sha}"}
        assert await read_back(store, org, sha) == data
        # bodies that are not an upload: 4xx naming the field, never a 500
        upload = f"/api/v1/tickets/1/artifacts/upload?oid={org}"
        for content_type, raw in (
            ("multipart/form-data", b"x"),  # no boundary
            ("multipart/form-data; boundary=zz", b"--zz\r\nno colon here\r\n\r\nx\r\n--zz--\r\n"),
            ("multipart/form-data; boundary=zz", b"not multipart at all"),
            ("application/json", b"{}"),
        ):
            r = await client.post(upload, data=raw, headers={**auth, "Content-Type": content_type})
            assert 400 <= r.status < 500 and (await r.json())["field"] == "file", (content_type, raw)
        # the same file again on this ticket: 409, one event
        r = await client.post(
            f"/api/v1/tickets/1/artifacts/upload?oid={org}", data=form(data, "again.raw"), headers=auth
        )
        assert r.status == 409, await r.text()
        assert await events_of(pool, "artifact_added", org) == 1

        url = f"/api/v1/tickets/1/artifacts/{artifact['artifact_id']}/content?oid={org}"
        r = await client.get(url, headers=auth)
        assert r.status == 200 and await r.read() == data
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["Content-Disposition"].startswith('attachment; filename="mem.raw"')
        assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Content-SHA256"] == sha
        r = await client.get(url, headers={**auth, "Range": "bytes=1048570-1048600"})
        assert r.status == 206 and await r.read() == data[1048570:1048601]
        r = await client.get(url, headers={**auth, "Range": f"bytes=-{10}"})
        assert r.status == 206 and await r.read() == data[-10:]
        assert r.headers["Content-Range"] == f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}"
        r = await client.get(url, headers={**auth, "Range": f"bytes={len(data)}-"})
        assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
        r = await client.get(url, headers={**auth, "Range": "bytes=5-9", "If-Range": '"other"'})
        assert r.status == 200 and len(await r.read()) == len(data)  # another version: the whole file
        r = await client.get(url, headers={**auth, "Range": "bytes=5-9", "If-Range": f'"{sha}"'})
        assert r.status == 206 and await r.read() == data[5:10]
        # another org: 404, through the route and through a guessed digest alike
        r = await client.get(url.replace(f"oid={org}", f"oid={other_org}"), headers=other)
        assert r.status == 404
        r = await client.get(url, headers=other)
        assert r.status == 404

        # over the org's limit: 413 naming it, no event, no file
        await configure(pool, org, max_upload_bytes=1024)
        big = os.urandom(4096)
        r = await client.post(
            f"/api/v1/tickets/1/artifacts/upload?oid={org}", data=form(big, "big.bin"), headers=auth
        )
        body = await r.json()
        assert r.status == 413 and body["field"] == "file" and "max_upload_bytes" in body["error"], body
        assert await events_of(pool, "artifact_added", org) == 1
        assert await held(store, org) == {f"{sha[:2]}/{sha}"}
        await configure(pool, org, max_upload_bytes=512 << 20)
        # a client gone mid-upload (past a part's size: a multipart upload begun): no file, no temporary, no begun upload
        boundary = "cut-off"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.bin\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
        port = client.server.port
        assert port is not None
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (f"POST {upload} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth['Authorization']}\r\n"
             f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
             f"Content-Length: {len(head) + 4 * PART}\r\n\r\n").encode() + head + os.urandom(2 * PART)
        )  # fmt: skip
        await writer.drain()
        await asyncio.sleep(0.5)  # the API is storing it
        writer.close()
        for _ in range(50):
            await asyncio.sleep(0.1)
            if await held(store, org) == {f"{sha[:2]}/{sha}"}:
                break
        assert await held(store, org) == {f"{sha[:2]}/{sha}"}
        assert await events_of(pool, "artifact_added", org) == 1
        html = b"<html><script>document.title='ran'</script></html>"
        r = await client.post(
            f"/api/v1/tickets/1/artifacts/upload?oid={org}",
            data=form(html, "page.html", "text/html"),
            headers=auth,
        )
        assert r.status == 201

        # a telemetry reference with the full event keeps it (within its limit), and it reads back
        event = {"routing": {"this": "atom-x", "sid": "sensor-x", "event_type": "NEW_PROCESS"},
                 "event": {"FILE_PATH": "C:\\\\evil.exe", "COMMAND_LINE": "evil --now"}}  # fmt: skip
        r = await client.post(f"/api/v1/tickets/1/telemetry?oid={org}", json={"event": event}, headers=auth)
        assert r.status == 201, await r.text()
        huge = {"routing": {"this": "atom-y", "sid": "sensor-y"}, "event": {"blob": "x" * 300_000}}
        r = await client.post(f"/api/v1/tickets/1/telemetry?oid={org}", json={"event": huge}, headers=auth)
        assert r.status == 413 and (await r.json())["field"] == "event"
        await project(pool)
        listed = await (await client.get(f"/api/v1/tickets/1/telemetry?oid={org}", headers=auth)).json()
        assert [t["event"] for t in listed["telemetry"]] == [event]

        # the export: JSON as today, and with data a tarball, every part checked against the API
        plain = await (await client.get(f"/api/v1/tickets/1/export?oid={org}", headers=auth)).json()
        assert set(plain) == {"ticket", "events", "detections", "entities", "telemetry", "artifacts"}
        await client.post(
            f"/api/v1/tickets/1/artifacts?oid={org}", json={"artifact_type": "url", "url": "https://x.example/a"},
            headers=auth,
        )  # fmt: skip
        r = await client.get(f"/api/v1/tickets/1/export?oid={org}&with_data=true", headers=auth)
        assert r.status == 200 and r.headers["Content-Type"] == "application/gzip"
        root = f"ticket-{org}-1"
        members: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(await r.read()), mode="r:gz") as tar:
            for m in tar:
                extracted = tar.extractfile(m) if m.isfile() else None
                if extracted is not None:
                    members[m.name.removeprefix(root + "/")] = extracted.read()
        ticket = await (await client.get(f"/api/v1/tickets/1?oid={org}&expand=evidence", headers=auth)).json()
        exported = json.loads(members["ticket.json"])
        assert exported["ticket"] == ticket["ticket"] and exported["events"] == ticket["events"]
        for d in ticket["detections"]:
            assert json.loads(members[f"detections/{d['detection_id']}.json"]) == d
        for t in ticket["telemetry"]:
            assert json.loads(members[f"telemetry/{t['telemetry_id']}.json"]) == t["event"]
        files = [a for a in ticket["artifacts"] if a.get("sha256")]
        assert len(files) == 2
        for a in files:
            content = f"/api/v1/tickets/1/artifacts/{a['artifact_id']}/content?oid={org}"
            assert (
                members[f"artifacts/{a['artifact_id']}/{a['name']}"]
                == await (await client.get(content, headers=auth)).read()
            )
        [reference] = [a for a in ticket["artifacts"] if not a.get("sha256")]
        assert json.loads(members["warnings.json"]) == [
            {"artifact_id": reference["artifact_id"], "warning": "a reference, no file"}
        ]
    finally:
        await client.close()


async def test_an_archived_tickets_files_stay_readable_purges_take_them_and_leave_none_of_the_org(
    pool: db.Pool, tokens: TokenService, tmp_path: Path, store: EvidenceStore
) -> None:
    org = f"files-purged-{type(store).__name__}"
    client = await serve(pool, tokens, evidence=store)
    await ingest(pool, [lc(org, 1, cat="files-archived"), lc(org, 2, cat="files-active")])
    await project(pool)
    auth = bearer(tokens.mint("ana@x", {org: PERMS}, ttl_s=600))
    data, shared = os.urandom(100_000), os.urandom(5_000)
    try:
        r = await client.post(
            f"/api/v1/tickets/1/artifacts/upload?oid={org}", data=form(data, "a.pcap"), headers=auth
        )
        artifact = await r.json()
        for n in (1, 2):  # the same content on two tickets: one file
            upload = f"/api/v1/tickets/{n}/artifacts/upload?oid={org}"
            assert (await client.post(upload, data=form(shared, "s"), headers=auth)).status == 201
        r = await client.patch(f"/api/v1/tickets/1?oid={org}", json={"status": "closed"}, headers=auth)
        assert r.status == 200, await r.text()
        await project(pool)
        async with pool.acquire() as conn:
            configs = await load_configs(conn, [org])
        archived = await run_retention(
            pool, configs, tmp_path / "archive", datetime.now(UTC) + timedelta(days=400)
        )
        assert archived == 1
        url = f"/api/v1/tickets/1/artifacts/{artifact['artifact_id']}/content?oid={org}"
        r = await client.get(url, headers=auth)
        assert r.status == 200 and await r.read() == data  # archived: still readable
        assert await store.orgs() == [org]
        # two years on, the archive's purge takes its files, but not one another ticket still holds
        later = datetime.now(UTC) + timedelta(days=400 + 731)
        assert await purge_archives(pool, later, evidence=store) == 1
        kept = hashlib.sha256(shared).hexdigest()
        assert await held(store, org) == {f"{kept[:2]}/{kept}"}
        assert (await client.get(url, headers=auth)).status == 404
        tombstone = await purge_org(pool, org, "ops@x", tmp_path / "archive", evidence=store)
        assert tombstone.counts["evidence_files"] == 1
        assert await store.orgs() == [] and await held(store, org) == set()
        if isinstance(store, LocalStore):
            assert not any(store.root.rglob("*"))
        assert (await client.get(url, headers=auth)).status in (404, 410)
    finally:
        await client.close()
