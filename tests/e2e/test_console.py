"""The console in real headless Chromium (Debian's, driven by Playwright), against the API on a real
database: an analyst signs in, works the queue and a ticket, and each action reaches the event store
once, with the analyst as `by`. Tenancy and permissions hold in the console because it only calls
the public API. Set TICKETING_SCREENSHOTS=<dir> to save the pictures of docs/console.md."""

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from projections.registry import all_projections
from services.auth.tokens import TokenService
from services.commands.configs import update_config
from services.commands.envelope import CommandContext
from services.eventstore import db
from services.eventstore.subscription import catch_up
from tests.conftest import Client
from tests.integration.support import ingest, lc, projecting, serve, sso_settings

CHROMIUM = os.environ.get("TICKETING_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
ORG, OTHER = "soc-a", "soc-b"
ANALYST, READER = "ana@soc.example", "rita@soc.example"
WORK = ["investigation.get", "investigation.set"]
SHOTS = os.environ.get("TICKETING_SCREENSHOTS")


SCRIPT_ERRORS: list[str] = []  # every page's uncaught script errors (sign_in listens for them)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not await asyncio.to_thread(Path(CHROMIUM).exists):
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)"
        )
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        SCRIPT_ERRORS.clear()
        yield b
        await b.close()
    assert SCRIPT_ERRORS == [], "the console threw"


@pytest.fixture
async def console(pool: db.Pool, tokens: TokenService) -> AsyncIterator[Client]:
    """The API with the console, and a projector keeping the read tables up (as the process does)."""
    client = await serve(pool, tokens, oidc=sso_settings())  # the sign-in page offers single sign-on too
    async with projecting(pool):
        yield client
    await client.close()


class Site(NamedTuple):
    base: str  # the console's URL
    n: dict[str, int]  # ticket numbers of ORG by category


@pytest.fixture
async def site(pool: db.Pool, console: Client) -> Site:
    await seeded(pool)
    return Site(str(console.make_url("")).rstrip("/"), await numbers(pool))


async def seeded(pool: db.Pool) -> None:
    detections = [
        lc(ORG, 1, cat="lateral-movement", sensor="s1", priority=9),
        lc(ORG, 2, cat="phishing", sensor="s2", priority=6),
        lc(ORG, 3, cat="beaconing", sensor="s3", priority=4),
        lc(ORG, 4, cat="credential-dump", sensor="s4", priority=8),
        lc(ORG, 5, cat="port-scan", sensor="s5", priority=2),
        lc(ORG, 6, cat="ransomware", sensor="s6", priority=10),
        lc(OTHER, 1, cat="other-org-secret", sensor="x1", priority=9),
        lc(OTHER, 2, cat="other-org-thing", sensor="x2", priority=3),
    ]
    await ingest(pool, detections)
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)


async def numbers(pool: db.Pool, oid: str = ORG) -> dict[str, int]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT detection_cat, ticket_number FROM tickets WHERE oid = $1", oid)
    return {r[0]: r[1] for r in rows}


async def actions_by(console: Client, tokens: TokenService, number: int) -> list[tuple[str, str]]:
    """The ticket's timeline through the API, as (event, by)."""
    auditor = tokens.mint("auditor@soc.example", {ORG: ["investigation.get"]}, ttl_s=60)
    r = await console.get(
        f"/api/v1/tickets/{number}?oid={ORG}", headers={"Authorization": f"Bearer {auditor}"}
    )
    assert r.status == 200, await r.text()
    return [(e["type"], e["by"]) for e in (await r.json())["events"]]


async def sign_in(page: Page, base: str, token: str, path: str = "/") -> list[str]:
    """Open `path`, sign in, and return every URL the page asks for from then on. A script error
    on the page fails the test."""
    asked: list[str] = []
    page.set_default_timeout(10_000)
    # A navigation loads the page and its scripts anew: on a machine slowed by the rest of the
    # suite one took over 10 s once (a dashboard, 2026-12-06), where its controls are waited for
    # within the 10 s above.
    page.set_default_navigation_timeout(30_000)
    page.on("request", lambda r: asked.append(r.url))
    page.on("pageerror", lambda exc: SCRIPT_ERRORS.append(f"{page.url}: {exc}"))
    await page.goto(base + path)
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    return asked


async def labelled(page: Page) -> None:
    """Every control of the page has an accessible name; the first stop is the skip link, and each
    view puts the keyboard at its content."""
    unnamed = await page.evaluate(
        """() => [...document.querySelectorAll("input, select, textarea, button")]
             .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute("aria-label") && !c.textContent.trim())
             .map((c) => c.outerHTML.slice(0, 80))"""
    )
    assert unnamed == []
    first = "document.querySelector('a[href], button, input, select, textarea').textContent"
    assert await page.evaluate(first) == "Skip to content"
    assert await page.evaluate("document.activeElement.id") == "main"  # a view starts at its content
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.getElementById('main').contains(document.activeElement)")


async def shot(page: Page, name: str) -> None:
    if SHOTS:
        await asyncio.to_thread(Path(SHOTS).mkdir, parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


async def test_an_analyst_works_the_queue_and_a_ticket_and_each_action_is_recorded_once_as_theirs(
    pool: db.Pool, tokens: TokenService, console: Client, site: Site, browser: Browser
) -> None:
    base, n = site
    token = tokens.mint(ANALYST, {ORG: WORK}, ttl_s=3600)
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    asked = await sign_in(page, base, token)
    await expect(page.locator("#who")).to_contain_text(ANALYST)
    rows = page.get_by_role("table", name="Tickets").locator("tbody tr")
    await expect(rows).to_have_count(6)
    assert token not in page.url
    await labelled(page)

    # A new detection shows up in the open queue without a reload.
    await ingest(pool, [lc(ORG, 7, cat="late-arrival", sensor="s7", priority=5)])
    await expect(rows).to_have_count(7, timeout=20_000)

    # Filter: critical ones, then a search; the view is in the URL, so it can be shared.
    await page.get_by_role("group", name="severity").get_by_label("critical").check()
    await page.get_by_role("button", name="Apply", exact=True).click()
    await expect(rows).to_have_count(3)  # priority 8, 9, 10
    assert "severity=critical" in page.url
    await shot(page, "queue")
    shared = await browser.new_page()
    await sign_in(shared, base, token, "/?" + page.url.split("?", 1)[1])
    await expect(shared.get_by_role("table", name="Tickets").locator("tbody tr")).to_have_count(3)
    await shared.close()
    await page.get_by_label("search").fill("lateral")
    await page.get_by_role("button", name="Apply", exact=True).click()
    await expect(rows).to_have_count(1)

    # Open it and work it: acknowledge, in progress, resolve as a true positive.
    lateral = n["lateral-movement"]
    await rows.first.get_by_role("link").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text(f"Ticket #{lateral}")
    assert page.url.endswith(f"/tickets/{lateral}?oid={ORG}")
    for move in ("acknowledged", "in_progress"):
        await page.get_by_role("button", name=f"Move to {move}").click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text(move)
    await expect(page.get_by_role("button", name="Move to acknowledged")).to_have_count(
        0
    )  # only allowed moves
    await page.get_by_label("classified as").select_option("true_positive")
    await page.get_by_role("button", name="Move to resolved").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("resolved")
    await page.locator("#note-content").fill("Isolated the host; credentials rotated.")
    await page.locator("#note-type").select_option("remediation")
    await page.get_by_role("button", name="Add note").click()
    await expect(page.locator("#notes")).to_contain_text("credentials rotated")
    await page.locator("#entity-type").select_option("ip")
    await page.locator("#entity-value").fill("10.1.2.3")
    await page.locator("#entity-verdict").select_option("malicious")
    await page.get_by_role("button", name="Add entity").click()
    await expect(page.locator("#entities")).to_contain_text("10.1.2.3")
    await labelled(page)
    await shot(page, "ticket")
    await page.get_by_role("link", name="10.1.2.3").click()  # every ticket holding the indicator
    await expect(page.get_by_role("heading", level=1)).to_have_text("Tickets holding ip 10.1.2.3")
    back = page.get_by_role("link", name=f"#{lateral}", exact=True)
    for _ in range(20):  # the search reads the read tables, a moment behind the entity just added
        if await back.count():
            break
        await page.reload()
        await asyncio.sleep(0.2)
    await back.click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text(f"Ticket #{lateral}")

    # Merge two tickets into a third, from the target's page.
    target = n["credential-dump"]
    await page.goto(f"{base}/tickets/{target}?oid={ORG}")
    await page.locator("#merge-sources").fill(f"{n['beaconing']}, {n['port-scan']}")
    await page.get_by_role("button", name="Merge").click()
    await expect(page.locator("#detections h2")).to_have_text("Detections (3)")

    # Bulk-close two from the queue.
    await page.goto(f"{base}/?oids={ORG}&status=new")
    for cat in ("phishing", "ransomware"):
        await page.get_by_label(f"select ticket {n[cat]}").check()
    await page.locator("#bulk-status").select_option("closed")
    await page.get_by_role("button", name="Apply to selected").click()
    await expect(page.locator("#bulk-results li")).to_have_count(2)
    await expect(page.locator("#bulk-results")).to_contain_text(f"#{n['phishing']}: updated")

    # Through the API: each action happened once, by the analyst.
    trail = await actions_by(console, tokens, lateral)
    mine = [t for t, by in trail if by == ANALYST]
    assert mine == [
        "status_changed", "acknowledged", "status_changed", "status_changed", "resolved", "classified",
        "note_added", "entity_added",
    ], trail  # fmt: skip
    assert [t for t, by in await actions_by(console, tokens, target) if by == ANALYST] == [
        "merged_from",
        "merged_from",
    ]
    for cat in ("phishing", "ransomware"):
        assert [t for t, by in await actions_by(console, tokens, n[cat]) if by == ANALYST] == [
            "status_changed",
            "closed",
        ]
    # Every asset and call went to the service itself: nothing from a CDN.
    assert asked and all(url.startswith(base) for url in asked), [u for u in asked if not u.startswith(base)]
    await page.close()


async def test_a_conflicting_change_is_shown_and_nothing_is_lost(
    tokens: TokenService, console: Client, site: Site, browser: Browser
) -> None:
    base, n = site.base, site.n["phishing"]
    page = await browser.new_page()
    await sign_in(page, base, tokens.mint(ANALYST, {ORG: WORK}, ttl_s=3600), f"/tickets/{n}?oid={ORG}")
    await expect(page.get_by_role("heading", level=1)).to_contain_text(f"Ticket #{n}")
    await expect(page.locator("body[data-live=on]")).to_have_count(1)
    await page.locator("#assignee").fill("ana")  # typing when bob's change lands: the page keeps it
    bob = {"Authorization": f"Bearer {tokens.mint('bob@soc.example', {ORG: WORK}, ttl_s=60)}"}
    r = await console.patch(f"/api/v1/tickets/{n}?oid={ORG}", json={"assignee": "bob"}, headers=bob)
    assert r.status == 200
    await expect(page.locator("#banner")).to_contain_text("just changed by bob@soc.example")
    assert await page.locator("#assignee").input_value() == "ana"
    await page.get_by_role("button", name="Assign").click()
    await expect(page.locator("#banner")).to_contain_text("changed meanwhile")
    await expect(page.locator("#banner")).to_contain_text("bob@soc.example")
    assert [
        t for t, by in await actions_by(console, tokens, n) if by == ANALYST
    ] == []  # not applied over bob's
    await page.get_by_role("button", name="Reload").click()
    await expect(page.locator("dl.fields")).to_contain_text("bob")
    await page.locator("#assignee").fill("ana")
    await page.get_by_role("button", name="Assign").click()  # decided on what is there now: applies
    await expect(page.locator("dl.fields")).to_contain_text("ana")
    assert [t for t, by in await actions_by(console, tokens, n) if by == ANALYST] == ["assigned"]
    await page.close()


async def test_tenancy_and_permissions_hold_in_the_console(
    tokens: TokenService, console: Client, site: Site, browser: Browser
) -> None:
    base, n = site

    # Another org's analyst sees its own tickets only, and ours do not exist to it.
    page = await browser.new_page()
    await sign_in(page, base, tokens.mint("olga@b.example", {OTHER: WORK}, ttl_s=600))
    rows = page.get_by_role("table", name="Tickets").locator("tbody tr")
    await expect(rows).to_have_count(2)
    await expect(page.locator("main")).not_to_contain_text("lateral-movement")
    await page.goto(f"{base}/tickets/{n['lateral-movement']}?oid={ORG}")
    await expect(page.locator("#banner")).to_contain_text("not found")
    await expect(page.locator("main")).not_to_contain_text("lateral-movement")
    await page.close()

    # A reader sees the ticket and no action; a forged action is refused by the API.
    page = await browser.new_page()
    reader = tokens.mint(READER, {ORG: ["investigation.get"]}, ttl_s=600)
    await sign_in(page, base, reader, f"/tickets/{n['phishing']}?oid={ORG}")
    await expect(page.get_by_role("heading", level=1)).to_contain_text(f"Ticket #{n['phishing']}")
    await expect(page.locator("#timeline")).to_contain_text("created")
    for name in ("Move to acknowledged", "Assign", "Add note", "Add entity", "Merge"):
        await expect(page.get_by_role("button", name=name)).to_have_count(0)
    status: Any = await page.evaluate(
        """async ([n, oid]) => (await fetch(`/api/v1/tickets/${n}?oid=${oid}`, {method: "PATCH",
             headers: {"Authorization": `Bearer ${sessionStorage.getItem("ticketing.token")}`,
                       "Content-Type": "application/json"},
             body: JSON.stringify({status: "closed"})})).status""",
        [n["phishing"], ORG],
    )
    assert status == 403
    assert await actions_by(console, tokens, n["phishing"]) == [("created", "system:ingest")]
    await page.close()


async def test_the_dashboard_and_the_report_page_show_the_api_figures(
    tokens: TokenService, console: Client, site: Site, browser: Browser
) -> None:
    base, n = site
    token = tokens.mint(ANALYST, {ORG: WORK}, ttl_s=600)
    worked = {"ransomware": "true_positive", "port-scan": "false_positive"}
    for cat, classification in worked.items():  # two worked through the API: one TP, one FP
        for body in ({"status": "acknowledged"}, {"status": "in_progress"},
                     {"status": "resolved", "classification": classification}):  # fmt: skip
            r = await console.patch(
                f"/api/v1/tickets/{n[cat]}?oid={ORG}", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            assert r.status == 200, await r.text()
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    await sign_in(page, base, token)
    await page.get_by_role("link", name="Dashboard").click()
    await expect(
        page.get_by_role("img", name="Tickets by severity: critical 3, high 1, medium 1, low 1")
    ).to_be_visible()
    await expect(page.get_by_role("table", name="Per org")).to_contain_text(ORG)
    await shot(page, "dashboard")
    await page.get_by_role("link", name="Reports").click()
    await page.get_by_label("from").fill("2026-01-01")
    await page.get_by_label("to").fill("2026-12-31")
    await page.get_by_label("group by").select_option("severity")
    await page.get_by_role("button", name="Show").click()
    report = page.get_by_role("table", name="Report")
    await expect(report.locator("tbody tr").first).to_contain_text("all6")
    await expect(report.locator("tbody tr").first).to_contain_text("50.0%")  # TP rate: one of the two
    await expect(report).to_contain_text("critical")
    await shot(page, "reports")
    async with page.expect_download() as download:
        await page.get_by_role("link", name="Download CSV").click()
    csv = await asyncio.to_thread(Path(await (await download.value).path()).read_text)
    assert csv.splitlines()[0].startswith('"group","tickets","MTTA mean"') and '"all","6"' in csv
    # The trend: time series of the same period, and their CSV from the API.
    trend = page.get_by_role("img", name=re.compile(r"^Tickets opened and closed\. opened: 2026-01-01 0"))
    await expect(trend).to_be_visible()
    async with page.expect_download() as download:
        await page.get_by_role("button", name="Download trend CSV").click()
    rows = (await asyncio.to_thread(Path(await (await download.value).path()).read_text)).splitlines()
    assert (
        rows[0].startswith("bucket,group,opened,closed") and sum(int(r.split(",")[2]) for r in rows[1:]) == 6
    )
    await page.close()


async def test_the_ticket_url_answers_the_page_itself_without_a_token(console: Client) -> None:
    """The stable ticket URL (ticket_url_template) is the page; it asks for a token, holds no data."""
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/tickets/42?oid=soc-a", "/dashboard", "/reports"):
            async with session.get(console.make_url(path)) as r:
                page = await r.text()
                assert r.status == 200 and r.content_type == "text/html", path
                assert "/console/console.js" in page and "soc-a" not in page
                assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        async with session.get(console.make_url("/console/console.js")) as r:
            assert r.status == 200 and r.content_type == "text/javascript"
        async with session.get(console.make_url("/console/../app.py")) as r:
            assert r.status == 404
        async with session.get(console.make_url("/api/v1/whoami")) as r:
            assert r.status == 401


async def test_grouping_reasons_suppressions_rule_health_and_a_split_in_the_console(
    pool: db.Pool, tokens: TokenService, console: Client, browser: Browser
) -> None:
    """Issue 31 in the console: the detections list says why each detection is on its ticket, a
    split is one action, the dashboard shows what each active suppression holds, and the rule
    report sits beside the reports."""
    token = tokens.mint(ANALYST, {ORG: WORK}, ttl_s=600)
    auth = {"Authorization": f"Bearer {token}"}
    admin = tokens.mint("lead@soc.example", {ORG: [*WORK, "org.conf.set"]}, ttl_s=600)
    rule = {"name": "by-host", "match": {"category": "beacon*"}, "key": ["hostname"], "window_minutes": 120}
    r = await console.put(f"/api/v1/config/{ORG}", json={"grouping_rules": [rule]},
                          headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
    assert r.status == 200, await r.text()
    expires = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    r = await console.post(f"/api/v1/suppressions?oid={ORG}", headers=auth,
                           json={"match": {"category": "printer-*"}, "reason": "the print server", "expires_at": expires})  # fmt: skip
    assert r.status == 201, await r.text()
    beacons = [lc(ORG, m, cat="beaconing", sensor=f"s{m}") for m in (1, 2, 3)]
    await ingest(pool, [*beacons, *(lc(ORG, m, cat="printer-noise", sensor="p") for m in range(7))])
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    await sign_in(page, site_url(console), token, f"/tickets/1?oid={ORG}")
    grouping = page.locator("#detections td.grouping")
    await expect(grouping.nth(1)).to_have_text("by-host: hostname=h (fixed 120 min)")
    await page.get_by_label("split off into a new ticket").fill(beacons[2]["detect_id"])
    await page.get_by_role("button", name="Split").click()
    await expect(page.locator("#related")).to_have_text("#2")
    await expect(page.locator("#detections tbody tr")).to_have_count(2)
    await page.get_by_role("link", name="Dashboard").click()
    held = page.get_by_role("table", name="Active suppressions")
    await expect(held).to_contain_text("the print server")
    await expect(held.locator("td.held")).to_have_text("7")
    await page.get_by_role("link", name="Reports").click()
    await page.get_by_label("from").fill("2026-01-01")
    await page.get_by_label("to").fill("2026-12-31")
    await page.get_by_role("button", name="Show").click()
    rules = page.get_by_role("table", name="Rule health")
    await expect(rules).to_contain_text("printer-noise")
    await expect(rules.locator("tr", has_text="printer-noise")).to_contain_text("7")
    await labelled(page)
    await page.close()


def site_url(console: Client) -> str:
    return str(console.make_url("")).rstrip("/")


AXE = Path(sys.prefix) / "axe" / "node_modules" / "axe-core" / "axe.min.js"  # `make browser` installs it


async def serious_violations(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page as it stands."""
    await page.add_script_tag(path=str(AXE))
    found: list[str] = await page.evaluate(
        """async () => (await axe.run(document, { resultTypes: ["violations"] })).violations
             .filter((v) => v.impact === "serious" || v.impact === "critical")
             .map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`)"""
    )
    return found


async def test_keys_org_names_and_an_axe_run_on_every_page(
    pool: db.Pool, tokens: TokenService, console: Client, site: Site, browser: Browser
) -> None:
    base = site.base
    async with pool.acquire() as conn, conn.transaction():
        await update_config(
            conn, ORG, {"org_name": "Acme SOC"}, CommandContext(actor="lead@x"), datetime.now(UTC)
        )
    token = tokens.mint(ANALYST, {ORG: WORK}, ttl_s=600)
    context = await browser.new_context(
        bypass_csp=True, viewport={"width": 1280, "height": 900}
    )  # axe is injected
    page = await context.new_page()
    await sign_in(page, base, token, f"/?oids={ORG}&sort=ticket_number&order=asc")
    await expect(page.locator("#who")).to_contain_text("Acme SOC (investigation.get")
    rows = page.get_by_role("table", name="Tickets").locator("tbody tr")
    await expect(rows).to_have_count(6)
    await expect(rows.first.locator("td").last).to_have_text("Acme SOC")
    assert await serious_violations(page) == []
    # j, j, k: the current row moves and its link has the focus; o opens it
    for key in ("j", "j", "j", "k"):
        await page.keyboard.press(key)
    await expect(page.locator("tbody tr.current")).to_have_count(1)
    assert await page.evaluate("document.activeElement.textContent") == "#2"
    await page.keyboard.press("a")  # acknowledge the current row's ticket, from the queue
    await expect(page.locator("#banner")).to_contain_text("#2 moved to acknowledged")
    await page.keyboard.press("o")
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Ticket #2")
    await expect(page.get_by_role("heading", level=1)).to_contain_text("acknowledged")
    assert await serious_violations(page) == []
    await page.keyboard.press("e")  # the ticket page's own "Move to escalated"
    await expect(page.get_by_role("heading", level=1)).to_contain_text("escalated")
    await page.keyboard.press("c")
    assert await page.evaluate("document.activeElement.id") == "classify"
    await page.keyboard.press("Escape")
    await page.keyboard.press("?")
    help_ = page.get_by_role("dialog", name="Keyboard shortcuts")
    await expect(help_).to_be_visible()
    await expect(help_).to_contain_text("acknowledge")
    assert await serious_violations(page) == []
    await page.keyboard.press("Escape")
    await expect(help_).to_have_count(0)
    await page.keyboard.press("/")  # the queue's search, from anywhere
    await expect(page.get_by_role("heading", level=1)).to_have_text("Queue")
    await expect(page.locator("body[data-live=on]")).to_have_count(1)  # the view is drawn
    await page.keyboard.press("/")
    assert await page.evaluate("document.activeElement.name") == "search"
    for path in ("/dashboard", "/reports", f"/entities?oids={ORG}&entity_type=ip&entity_value=10.0.0.1"):
        await page.goto(base + path)
        await expect(page.locator("main h1")).to_have_count(1)
        await page.wait_for_load_state("networkidle")
        assert await serious_violations(page) == [], path
    # the check itself finds what it should: an image without a text alternative is critical
    await page.evaluate("document.querySelector('main').append(Object.assign(new Image(), {src: 'data:,'}))")
    assert [v for v in await serious_violations(page) if v.startswith("image-alt")]
    await context.close()


async def test_an_org_admin_changes_the_configuration_and_credentials_and_a_reader_only_reads(
    tokens: TokenService, console: Client, site: Site, browser: Browser
) -> None:
    base = site.base
    admin = tokens.mint("lead@soc.example", {ORG: [*WORK, "org.conf.get", "org.conf.set"]}, ttl_s=600)
    auth = {"Authorization": f"Bearer {admin}"}
    hook = "http://127.0.0.1:9/services/T0/B0/console-secret-path"  # loopback: the fence lets tests through
    context = await browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await sign_in(page, base, admin)
    await page.get_by_role("link", name="Admin").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Administration · {ORG}")
    assert await serious_violations(page) == []

    async def edit(section: str, change: Any) -> None:
        box = page.get_by_label(f"{section} (JSON)")
        value = json.loads(await box.input_value())
        change(value)
        await box.fill(json.dumps(value))
        await page.get_by_role("button", name=f"Save {section.lower()}").click()
        await expect(page.locator("#banner")).to_have_text(f"{section} saved.")

    await edit("Severity and SLA", lambda v: v["sla_config"]["critical"].update(mtta_minutes=20))
    await edit("Notifications", lambda v: v.update(notifications={
        "channels": [{"name": "soc", "type": "slack", "url": hook}],
        "rules": [{"on": "ticket_opened", "channels": ["soc"]}]}))  # fmt: skip
    shown = await page.get_by_label("Notifications (JSON)").input_value()
    assert hook not in shown and '"url_fingerprint": "sha256:' in shown
    await edit("Org", lambda v: v.update(org_name="Acme SOC"))  # the others are sent back without secrets
    await shot(page, "admin")
    r = await console.get(f"/api/v1/config/{ORG}", headers=auth)
    config = await r.json()
    assert config["sla_config"]["critical"]["mtta_minutes"] == 20 and config["org_name"] == "Acme SOC"
    assert config["notifications"]["channels"][0]["url_fingerprint"].startswith("sha256:")
    # an invalid value is refused naming the field, and nothing changes
    await page.get_by_label("Retention and auto-close (JSON)").fill('{"retention_days": 0}')
    await page.get_by_role("button", name="Save retention and auto-close").click()
    await expect(page.locator("#banner")).to_contain_text("retention_days")
    # the signing secret is shown once; a new API key is shown once, then listed and revoked
    await page.get_by_role("button", name="Show the secret once").click()
    await expect(page.locator("#signing-secret-shown code")).to_have_text(re.compile(r".{20,}"))
    secret = await page.locator("#signing-secret-shown code").inner_text()
    await page.get_by_role("button", name="Show the secret once").click()
    await expect(page.locator("#banner")).to_contain_text("already")
    await page.get_by_label("name", exact=True).fill("siem export")
    await page.get_by_label("ticket.track", exact=True).check()
    await page.get_by_role("button", name="Create key").click()
    await expect(page.locator("#new-key-shown code")).to_have_text(re.compile(r"^shk_"))
    key = await page.locator("#new-key-shown code").inner_text()
    r = await console.get(f"/api/v1/credentials?oid={ORG}", headers=auth)
    [listed] = [k for k in (await r.json())["api_keys"] if k["name"] == "siem export"]
    assert listed["permissions"] == ["ticket.track"] and listed["revoked_at"] is None
    await page.reload()
    await page.get_by_role("button", name="revoke key siem export").click()
    await expect(page.locator("#banner")).to_have_text("Revoked.")
    r = await console.get(f"/api/v1/credentials?oid={ORG}", headers=auth)
    assert [
        k["revoked_at"] is not None for k in (await r.json())["api_keys"] if k["name"] == "siem export"
    ] == [True]
    await context.close()

    # A reader of the configuration sees all of it, read-only, with no secret and no control that writes.
    reader = tokens.mint(READER, {ORG: ["investigation.get", "org.conf.get"]}, ttl_s=600)
    page = await browser.new_page()
    await sign_in(page, base, reader, f"/admin?oid={ORG}")
    await expect(page.get_by_label("Severity and SLA (JSON)")).to_have_attribute("readonly", "")
    await expect(page.get_by_text("Read-only: this token may read the configuration")).to_be_visible()
    buttons = await page.locator("main button").all_inner_texts()
    assert buttons == ["Show"], buttons  # the org picker only
    text = await page.content()
    assert hook not in text and secret not in text and key not in text
    await expect(page.get_by_role("region", name="Credentials")).to_have_count(0)
    await page.close()


def parity_table() -> list[tuple[str, str, str, str, str]]:
    """docs/console.md's parity table: (method, path, page, role, control)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "console.md").read_text()
    section = text.split("## Parity", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            method, path = cells[0].split("`")[1].split(" ", 1)
            rows.append((method, path, cells[1], cells[2], cells[3]))
    return rows


async def asked_for(asked: list[str], route: str, click: Any) -> bool:
    """Whether the page asked for the route (its `{…}` parts any segment), after a click if given."""
    pattern = re.compile(
        "^" + "/".join("[^/?]+" if p.startswith("{") else re.escape(p) for p in route.split("/")) + r"(\?|$)"
    )
    if click is not None:
        await click.click()
    for _ in range(50 if click is not None else 1):
        if any(pattern.match("/" + u.split("//", 1)[1].split("/", 1)[1]) for u in asked):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_the_parity_table_is_walked_control_by_control(
    pool: db.Pool, tokens: TokenService, console: Client, site: Site, browser: Browser, tmp_path: Path
) -> None:
    from services.api.app import ROUTES
    from services.api.auth import OrgScope
    from services.commands.configs import load_configs
    from services.scheduler.retention import run_retention
    from tests.integration.test_access_matrix import add_evidence

    rows = parity_table()
    console_routes = {(r.method, r.path) for r in ROUTES if r.permission and r.scope not in
                      (OrgScope.KEY, OrgScope.OPERATOR, OrgScope.FORM)}  # fmt: skip
    assert console_routes - {(m, p) for m, p, *_ in rows} == set(), "a route without its control"
    # a ticket with something of everything, an active suppression, an archived ticket
    base = site.base
    lead = "lead@soc.example"
    token = tokens.mint(lead, {ORG: [*WORK, "org.conf.get", "org.conf.set"]}, ttl_s=600)
    auth = {"Authorization": f"Bearer {token}"}
    await add_evidence(pool, ORG)
    upload = aiohttp.FormData()
    upload.add_field("file", b"walk evidence", filename="walk.txt", content_type="text/plain")
    r = await console.post(f"/api/v1/tickets/1/artifacts/upload?oid={ORG}", data=upload, headers=auth)
    assert r.status == 201, await r.text()
    r = await console.post(
        f"/api/v1/tickets/1/detections?oid={ORG}",
        json={"detection_id": "walk-2", "detection_cat": "c"},
        headers=auth,
    )
    assert r.status == 201, await r.text()
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    r = await console.post(f"/api/v1/suppressions?oid={ORG}", headers=auth,
                           json={"match": {"category": "walk*"}, "reason": "walk", "expires_at": soon})  # fmt: skip
    assert r.status == 201, await r.text()
    r = await console.patch(
        f"/api/v1/tickets/{site.n['port-scan']}?oid={ORG}", json={"status": "closed"}, headers=auth
    )
    assert r.status == 200, await r.text()
    async with pool.acquire() as conn:
        configs = await load_configs(conn, [ORG])
    archived = 0
    for _ in range(50):  # once the projector (the console fixture's) has the ticket closed
        archived += await run_retention(pool, configs, tmp_path, datetime.now(UTC) + timedelta(days=100))
        if archived:
            break
        await asyncio.sleep(0.1)
    assert archived == 1
    pages = {
        "queue": f"/?oids={ORG}", "ticket": f"/tickets/1?oid={ORG}", "dashboard": f"/dashboard?oids={ORG}",
        "reports": f"/reports?oids={ORG}", "entities": f"/entities?oids={ORG}&entity_type=ip&entity_value=203.0.113.7",
        "admin": f"/admin?oid={ORG}",
    }  # fmt: skip
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    asked = await sign_in(page, base, token)
    await expect(page.locator("#who")).to_contain_text(lead)
    for name, path in pages.items():
        asked.clear()
        await page.goto(base + path)
        await expect(page.locator("main h1")).to_have_count(1)  # (the queue's stream never idles the network)
        for method, route, where, role, control in rows:
            if where != name:
                continue
            aria: Any = role  # one of Playwright's ARIA role names, as the table writes it
            found = (
                page.get_by_role(aria) if control.startswith("(") else page.get_by_role(aria, name=control)
            )
            await expect(found.first).to_be_visible()
            if (
                route.rsplit("/", 1)[-1] in ("detections", "entities", "telemetry", "artifacts")
                and where == "ticket"
            ):
                route = route.rsplit("/", 1)[0]  # read with the ticket (?expand=evidence), one call
                assert any("expand=evidence" in u for u in asked)
            if method == "GET" and not await asked_for(asked, route, click=None):
                # asked for on use (the download of an archived ticket, the trend's CSV): use it
                assert await asked_for(asked, route, click=found.first), (method, route)
    await context.close()


async def test_the_ticket_and_dashboard_controls_each_record_what_they_say(
    pool: db.Pool, tokens: TokenService, console: Client, site: Site, browser: Browser
) -> None:
    from tests.integration.test_access_matrix import add_evidence

    await add_evidence(pool, ORG)  # on ticket 1: entity 203.0.113.7, telemetry atom-1, an artifact, a task
    token = tokens.mint(ANALYST, {ORG: WORK}, ttl_s=600)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await sign_in(page, site.base, token, f"/tickets/1?oid={ORG}")
    heading = page.get_by_role("heading", level=1)
    await expect(heading).to_contain_text("Ticket #1")

    async def done(step: Any, shows: str) -> None:
        await step
        await expect(page.locator("main")).to_contain_text(shows)

    await page.get_by_label("detection id").fill("manual-7")
    await done(page.get_by_role("button", name="Link detection").click(), "manual-7")
    await done(page.get_by_role("button", name="unlink detection manual-7").click(), "Detections (1)")
    await page.get_by_label("verdict of 203.0.113.7", exact=True).select_option("benign")
    await page.get_by_role("button", name="set the verdict of 203.0.113.7").click()
    await expect(page.get_by_label("verdict of 203.0.113.7", exact=True)).to_have_value("benign")
    await done(page.get_by_role("button", name="remove entity 203.0.113.7").click(), "Entities (0)")
    await page.get_by_label("atom", exact=True).fill("atom-9")
    await page.get_by_label("sensor id").fill("sid-9")
    await done(page.get_by_role("button", name="Add telemetry").click(), "atom-9 on sid-9")
    await page.get_by_label("verdict of telemetry atom-9", exact=True).select_option("malicious")
    await done(page.get_by_role("button", name="set the verdict of telemetry atom-9").click(), "(malicious)")
    await done(page.get_by_role("button", name="remove telemetry atom-1").click(), "Telemetry (1)")
    await done(
        page.get_by_role("button", name=re.compile("^remove artifact memory_dump")).click(), "Artifacts (0)"
    )
    await page.get_by_label("investigation id", exact=True).fill("INV-42")
    # (the fields come from the read model, the timeline from the event store: it shows at once)
    await done(page.get_by_role("button", name="Set investigation").click(), "investigation_linked")
    await page.get_by_label("external ticket", exact=True).fill("JIRA-7")
    await page.get_by_label("external ticket URL").fill("https://jira.example/browse/JIRA-7")
    await done(page.get_by_role("button", name="Link external ticket").click(), "external_ticket_linked")
    await page.get_by_label("task", exact=True).fill("Reset the password")
    await done(page.get_by_role("button", name="Add task").click(), "Reset the password")
    await page.get_by_label("Isolate the host done").check()
    await done(asyncio.sleep(0), "Tasks (1/2 done)")
    kinds = [t for t, by in await actions_by(console, tokens, 1) if by == ANALYST]
    assert kinds == [
        "detection_added", "detection_removed", "entity_updated", "entity_removed", "telemetry_added",
        "telemetry_updated", "telemetry_removed", "artifact_removed", "investigation_linked",
        "external_ticket_linked", "task_added", "task_completed",
    ], kinds  # fmt: skip

    # The dashboard: a suppression made and ended, and the analyst away, each through its route.
    await page.get_by_role("link", name="Dashboard").click()
    await page.get_by_label("reason", exact=True).fill("patch tuesday noise")
    await page.get_by_label("category", exact=True).fill("port-*")
    await page.get_by_label("until", exact=True).fill(
        (datetime.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    )
    await page.get_by_role("button", name="Suppress", exact=True).click()
    await expect(page.get_by_role("table", name="Active suppressions")).to_contain_text("patch tuesday noise")
    await page.get_by_role("button", name="end suppression patch tuesday noise").click()
    await expect(page.locator("#banner")).to_have_text("Suppression ended.")
    await expect(page.locator("#suppressions")).not_to_contain_text("patch tuesday noise")
    await page.get_by_label("away until").fill(
        (datetime.now() + timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M")
    )
    await page.get_by_role("button", name="Set away").click()
    await expect(page.locator("#banner")).to_contain_text("routing skips you")
    async with pool.acquire() as conn:
        away = await conn.fetchval(
            "SELECT away_until FROM analysts_away WHERE oid = $1 AND analyst = $2", ORG, ANALYST
        )
    assert away is not None and away > datetime.now(UTC) + timedelta(hours=7)
    await page.close()
