"""`make bench ONLY=console`: the console in Chromium at 1,000,000 tickets.

The read model holds a million tickets of 100 orgs (seeded and rebuilt as the API benchmark does),
one ticket has 200 detections and 300 timeline events, and the API process serves the console.
Each view is timed from the navigation (or the filter's Apply) until its content is on the page,
in Chromium as an analyst sees it: the p95 of each is printed.
"""

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import aiohttp
import asyncpg

from domain.commands import AddNote, LinkDetection, TicketCommand
from domain.detections import Detection
from projections.tickets import TicketsProjection
from services.auth.tokens import TokenService
from services.bootstrap import make_handler
from services.commands.envelope import CommandContext
from services.eventstore.subscription import catch_up
from tests.bench.pace import paced

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
ORG = "org-7"


async def big_ticket(dsn: str) -> int:
    """One ticket of ORG with 200 detections and 300 events (its detections and 100 notes)."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    handler, ctx = make_handler(), CommandContext(actor="bench@example.com")
    try:
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT ticket_id, ticket_number FROM ticket_index WHERE oid = $1 ORDER BY ticket_number LIMIT 1",
                ORG,
            )
            assert row is not None
            tid, number = row
            now = datetime.now(UTC)
            links: list[TicketCommand] = [
                LinkDetection(tid, Detection(
                    detection_id=f"bench-{i}", oid=ORG, detection_cat="lateral_movement", detection_source="bench",
                    detection_priority=7, sensor_id="sensor-1", hostname=f"host-{i}", detected_at=now,
                    source_format="limacharlie",
                ), severity="high")
                for i in range(199)
            ]  # fmt: skip
            notes: list[TicketCommand] = [
                AddNote(tid, uuid.uuid4(), f"note {i}: looked at host-{i}") for i in range(100)
            ]
            async with conn.transaction():
                await handler.execute(conn, [(c, ctx) for c in [*links, *notes]])
        p = TicketsProjection()
        await catch_up(pool, p.name, p.apply)
        return int(number)
    finally:
        await pool.close()


async def timed(action: Awaitable[object], wait: Awaitable[object]) -> float:
    """Milliseconds from the action until what it shows is on the page."""
    start = time.perf_counter()
    await action
    await wait
    return (time.perf_counter() - start) * 1000


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def bench_console(secret: str, scale: Any, report: Any, dsn: str, url: str) -> None:
    """The views' p95 in Chromium against the API at `url` on `dsn`; `scale` and `report` are the
    runner's (this module does not import it back)."""
    from playwright.async_api import async_playwright

    print("6. console in Chromium", flush=True)
    number = await big_ticket(dsn)
    token = TokenService(secret).mint("analyst@example.com", {ORG: ["investigation.get"]}, ttl_s=3600)
    runs = 5 if scale.api_runs == 1 else 20
    frm = (datetime.now(UTC) - timedelta(days=90)).date().isoformat()
    to = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = await browser.new_page(viewport={"width": 1440, "height": 900})
        await page.goto(url + "/")
        await page.get_by_label("API token").fill(token)
        await page.get_by_role("button", name="Sign in", exact=True).click()
        await page.wait_for_selector("#queue tbody tr")
        views: dict[str, list[float]] = {k: [] for k in ("queue", "filter", "ticket", "dashboard", "report")}
        for _ in range(runs):
            views["queue"].append(
                await timed(page.goto(f"{url}/?oids={ORG}"), page.wait_for_selector("#queue tbody tr"))
            )
            await page.evaluate("document.querySelector('#queue table').dataset.old = '1'")
            await page.get_by_role("group", name="severity").get_by_label("critical").check()
            views["filter"].append(await timed(
                page.get_by_role("button", name="Apply", exact=True).click(),
                page.wait_for_selector("#queue table:not([data-old]) tbody tr"),
            ))  # fmt: skip
            views["ticket"].append(await timed(
                page.goto(f"{url}/tickets/{number}?oid={ORG}"), page.wait_for_selector("#timeline tbody tr"),
            ))  # fmt: skip
            views["dashboard"].append(await timed(
                page.goto(f"{url}/dashboard?oids={ORG}"), page.wait_for_selector("#counts table"),
            ))  # fmt: skip
            views["report"].append(await timed(
                page.goto(f"{url}/reports?oids={ORG}&from={frm}&to={to}&interval=day"),
                page.wait_for_selector("#rules"),
            ))  # fmt: skip
        await browser.close()
    # The report page's calls one by one: where its time goes.
    calls: dict[str, list[float]] = {}
    period = f"oids={ORG}&from={frm}T00:00:00Z&to={to}T00:00:00Z"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s:
        for name in ("summary", "trend", "tasks", "rules"):
            for _ in range(runs):
                start = time.perf_counter()
                async with s.get(f"{url}/api/v1/reports/{name}?{period}") as r:
                    await r.read()
                    assert r.status == 200, (name, r.status)
                calls.setdefault(name, []).append((time.perf_counter() - start) * 1000)
    note = f"{scale.api_tickets:,} tickets, {runs} runs; Chromium, headless"
    names = {
        "queue": "first rows of the queue",
        "filter": "a filter change to its rows",
        "ticket": "ticket, 200 detections, 300 events",
        "dashboard": "dashboard",
        "report": "90-day report and trend",
    }
    for key, name in names.items():
        report.add(f"console {name} p95", "ms", [p95(views[key])], "< 1000", note)
    for name, times in calls.items():
        report.add(
            f"  its GET reports/{name} (90 days) p95", "ms", [p95(times)], "", f"{runs} calls, one org"
        )


# Records, in the page, when a row holding each probe's category first appears in the queue.
_OBSERVE = """() => {
  window.__seen = {};
  window.__lists = [];  // how long each of the queue's list requests took
  new PerformanceObserver((found) => {
    for (const e of found.getEntries()) if (e.name.includes("/api/v1/tickets?")) window.__lists.push(e.duration);
  }).observe({ type: "resource", buffered: false });
  new MutationObserver(() => {
    for (const row of document.querySelectorAll("#queue tbody tr")) {
      const m = row.textContent.match(/probe-(\\d+)/);
      if (m && !(m[1] in window.__seen)) window.__seen[m[1]] = Date.now();
    }
  }).observe(document.getElementById("main"), { childList: true, subtree: true });
}"""


async def drain(
    url: str,
    token: str,
    oid: str,
    stop: asyncio.Event,
    counts: list[int],
    probes: dict[str, float] | None = None,
) -> None:
    """One more console on the stream: takes every event it is sent until `stop` (counted in
    counts[0]); reset, it connects again as the console does (counted in counts[1]). Given
    `probes`, it notes when each probe's first event came."""
    pattern = b"event: ticket\n"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s:
        while not stop.is_set():
            async with s.get(
                f"{url}/api/v1/stream?oids={oid}", timeout=aiohttp.ClientTimeout(total=None)
            ) as r:
                tail = b""
                async for chunk in r.content.iter_any():
                    seen = tail + chunk
                    counts[0] += seen.count(pattern)
                    tail = seen[-(len(pattern) - 1) :]
                    if probes is not None:
                        for m in re.finditer(rb"probe-(\d+)", chunk):
                            probes.setdefault(m[1].decode(), time.time() * 1000)
                    if b"event: reset" in seen:
                        counts[1] += 1
                        break
                    if stop.is_set():
                        return


class LiveRun(NamedTuple):
    to_row: list[float]  # ms from publish to the probe's row in the open queue
    to_stream: list[float]  # ms from publish to the probe's first event on a stream
    lists: list[float]  # ms of each list request the open queue made
    unseen: int  # probes never shown
    read: int  # events the other streams read
    resets: int  # times they were reset


async def publish_to_row(
    url: str, token_for: Any, oid: str, send: Any, rate: int, seconds: int, consoles: int
) -> LiveRun:
    """Publishing a probe detection on Kafka to its row in an open queue in Chromium (filtered to
    the probes), while `rate` detections/s arrive and `consoles` more streams are open."""
    from playwright.async_api import async_playwright, expect

    stop = asyncio.Event()
    counts = [0, 0]
    arrived: dict[str, float] = {}
    streams = [
        asyncio.create_task(
            drain(url, token_for(f"console-{i}@example.com"), oid, stop, counts, arrived if i == 0 else None)
        )
        for i in range(consoles)
    ]
    sent: dict[str, float] = {}
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            await page.goto(url + "/")
            await page.get_by_label("API token").fill(token_for("analyst@example.com"))
            await page.get_by_role("button", name="Sign in", exact=True).click()
            await page.wait_for_selector("#who:not(:empty)")
            # the analyst's queue follows the probes' category (ten a second), so that each probe's row
            # is on its first page; every event of the org still reaches the page's stream
            await page.goto(f"{url}/?oids={oid}&search=probe")
            await expect(page.locator("body[data-live=on]")).to_have_count(1, timeout=30_000)
            await page.evaluate(_OBSERVE)
            async for i in paced(rate, rate * seconds):
                probe = i % (rate // 10) == 0  # ten probes a second
                if probe:
                    sent[str(i)] = time.time() * 1000
                await send(i, f"probe-{i}" if probe else None)
            await asyncio.sleep(min(10, seconds))  # what is still on its way
            seen: dict[str, float] = await page.evaluate("window.__seen")
            lists: list[float] = await page.evaluate("window.__lists")
            await browser.close()
    finally:
        stop.set()
        for t in streams:
            t.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    to_row = [seen[k] - sent[k] for k in sent if k in seen]
    to_stream = [arrived[k] - sent[k] for k in sent if k in arrived]
    return LiveRun(to_row, to_stream, lists, len(sent) - len(to_row), counts[0], counts[1])
