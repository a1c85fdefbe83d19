"""Evidence files through the API as a process (issue 35): a 1 GiB upload is streamed, the API's RSS
grows by less than 100 MB, the download's SHA-256 matches and a Range request returns the exact
bytes; an interrupted upload leaves no file and no event; the console uploads a file (with a
progress bar) and downloads it; an HTML or SVG file uploaded as an artifact is never rendered, by
the console or the API: in Chromium it downloads, and no script of it runs."""

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.payload import AsyncIterablePayload
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, FilePayload, expect

from services.auth.tokens import TokenService
from services.devstack.embedded import free_port
from services.eventstore import db
from services.settings import Settings
from tests.e2e.conftest import Services
from tests.e2e.test_console import browser, sign_in  # noqa: F401  (browser: the fixture)
from tests.integration.support import configure, ingest, lc

ORG = "evidence-org"
GIB = 1 << 30
BLOCK = 1 << 20


def block(i: int) -> bytes:
    """The i-th MiB of the big file: different for every i, cheap to make again for a Range check."""
    seed = hashlib.sha256(i.to_bytes(8, "big")).digest()
    return seed * (BLOCK // len(seed))


async def big_file(sha: "hashlib._Hash") -> AsyncIterator[bytes]:
    for i in range(GIB // BLOCK):
        chunk = block(i)
        sha.update(chunk)
        yield chunk


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def artifact_events(pool: db.Pool) -> int:
    async with pool.acquire() as conn:
        n: int = await conn.fetchval(
            "SELECT count(*) FROM events WHERE type = 'artifact_added' AND metadata->>'oid' = $1", ORG
        )
        return n


async def test_a_1_gib_upload_is_streamed_and_an_interrupted_one_leaves_nothing(
    services: Services, settings: Settings, pool: db.Pool, tokens: TokenService
) -> None:
    await ingest(pool, [lc(ORG, 1, cat="evidence-big")])
    await configure(pool, ORG, max_upload_bytes=2 * GIB)  # (512 MiB unless the org says more)
    services.start("api")
    pid = services.procs["api"].pid
    auth = {
        "Authorization": f"Bearer {tokens.mint('ana@x', {ORG: ['investigation.get', 'investigation.set']}, ttl_s=600)}"
    }
    upload = f"{services.api}/api/v1/tickets/1/artifacts/upload?oid={ORG}"
    before = rss_kib(pid)
    peak = [before]
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    sent = hashlib.sha256()
    with aiohttp.MultipartWriter("form-data") as form:
        part = form.append_payload(
            AsyncIterablePayload(big_file(sent), content_type="application/octet-stream")
        )
        part.set_content_disposition("form-data", name="file", filename="disk.img")
    async with aiohttp.ClientSession(headers=auth) as s:
        r = await s.post(upload, data=form, timeout=aiohttp.ClientTimeout(total=300))
        artifact = await r.json()
        done.set()
        await sampler
        assert r.status == 201, artifact
        growth_mb = (peak[0] - before) / 1024
        print(f"1 GiB upload: API RSS {before // 1024} MB before, peak growth {growth_mb:.1f} MB")
        assert growth_mb < 100
        assert artifact["size"] == GIB and artifact["sha256"] == sent.hexdigest()

        content = f"{services.api}/api/v1/tickets/1/artifacts/{artifact['artifact_id']}/content?oid={ORG}"
        got = hashlib.sha256()
        async with s.get(content, timeout=aiohttp.ClientTimeout(total=300)) as r:
            assert r.status == 200 and r.headers["X-Content-SHA256"] == sent.hexdigest()
            async for chunk in r.content.iter_chunked(BLOCK):
                got.update(chunk)
        assert got.hexdigest() == sent.hexdigest()
        start = 700 * BLOCK - 5  # across two blocks
        async with s.get(content, headers={"Range": f"bytes={start}-{start + 9}"}) as r:
            assert r.status == 206 and r.headers["Content-Range"] == f"bytes {start}-{start + 9}/{GIB}"
            assert await r.read() == block(699)[-5:] + block(700)[:5]

    # interrupted: the client goes after 8 MiB of a 64 MiB upload
    store = settings.state_dir / "evidence" / ORG
    files_before = sorted(p.name for p in store.rglob("*") if p.is_file())
    boundary = "cut-off-upload"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
    port = int(services.api.rsplit(":", 1)[1])
    sock = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port))
    request = (f"POST /api/v1/tickets/1/artifacts/upload?oid={ORG} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"{next(iter(auth))}: {auth['Authorization']}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
               f"Content-Length: {len(head) + 64 * BLOCK + len(boundary) + 8}\r\n\r\n").encode() + head  # fmt: skip
    await asyncio.to_thread(sock.sendall, request)
    for i in range(8):
        await asyncio.to_thread(sock.sendall, block(1000 + i))
    await asyncio.sleep(0.5)  # the API is writing it
    sock.close()
    for _ in range(50):
        await asyncio.sleep(0.1)
        incoming = list((store / ".incoming").iterdir()) if (store / ".incoming").exists() else []
        if not incoming:
            break
    assert incoming == []
    assert sorted(p.name for p in store.rglob("*") if p.is_file()) == files_before
    assert await artifact_events(pool) == 1


async def test_an_html_or_svg_artifact_downloads_and_no_script_of_it_runs(
    browser: Browser,  # noqa: F811
    services: Services,
    pool: db.Pool,
    tokens: TokenService,
) -> None:
    await ingest(pool, [lc(ORG, 1, cat="evidence-html")])
    services.start("api")
    ran: list[str] = []  # what a script of an uploaded file would call home to

    async def beacon(request: web.Request) -> web.Response:
        ran.append(request.path)
        return web.Response(text="")

    home = web.Application()
    home.router.add_get("/{name}", beacon)
    server = TestServer(home, host="127.0.0.1", port=free_port())
    await server.start_server()
    call = str(server.make_url("/"))
    files = {
        "page.html": (f"<html><body><script>fetch('{call}html');document.title='ran'</script>"
                      f"<img src='{call}html-img'></body></html>", "text/html"),
        "drawing.svg": (f"<svg xmlns='http://www.w3.org/2000/svg'><script>fetch('{call}svg')</script>"
                        f"<image href='{call}svg-img'/></svg>", "image/svg+xml"),
    }  # fmt: skip
    token = tokens.mint("ana@x", {ORG: ["investigation.get", "investigation.set"]}, ttl_s=600)
    auth = {"Authorization": f"Bearer {token}"}
    ids = {}
    async with aiohttp.ClientSession(headers=auth) as s:
        for name, (text, media_type) in files.items():
            form = aiohttp.FormData()
            form.add_field("file", text.encode(), filename=name, content_type=media_type)
            r = await s.post(f"{services.api}/api/v1/tickets/1/artifacts/upload?oid={ORG}", data=form)
            assert r.status == 201, await r.text()
            ids[name] = (await r.json())["artifact_id"]

    # the console: a file uploaded through its form (with its progress bar), then each file is
    # offered as a download, never opened
    context = await browser.new_context(accept_downloads=True)
    page = await context.new_page()
    await sign_in(page, services.api, token, f"/tickets/1?oid={ORG}")
    notes = b"what the analyst found\n" * 1000
    found: FilePayload = {"name": "found.txt", "mimeType": "text/plain", "buffer": notes}
    await page.locator("#artifact-file").set_input_files(files=[found])
    await page.get_by_role("button", name="Upload file").click()
    await expect(page.locator("#artifacts")).to_contain_text(f"found.txt ({len(notes) / 1024:.1f} KiB")
    async with page.expect_download() as uploaded:
        await page.get_by_role("button", name="download found.txt").click()
    assert await asyncio.to_thread(Path(await (await uploaded.value).path()).read_bytes) == notes
    for name, (text, _) in files.items():
        button = page.get_by_role("button", name=f"download {name}")
        await expect(button).to_be_visible()
        async with page.expect_download() as info:
            await button.click()
        download = await info.value
        assert download.suggested_filename == name
        assert await asyncio.to_thread(Path(await download.path()).read_text) == text

    # the API itself, opened as a page (the token sent as the browser would send a cookie):
    # a download, never a document
    await context.set_extra_http_headers(auth)
    for name in files:
        opened = await context.new_page()
        async with opened.expect_download() as info:
            try:
                await opened.goto(f"{services.api}/api/v1/tickets/1/artifacts/{ids[name]}/content?oid={ORG}")
            except Exception as exc:  # Chromium: "Download is starting"
                assert "Download is starting" in str(exc)
        assert (await info.value).suggested_filename == name
        await opened.close()
    await asyncio.sleep(1)
    assert ran == []
    await context.close()
    await server.close()
