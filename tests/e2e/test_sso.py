"""Single sign-on (issue 34) in Chromium against a real OpenID Connect provider (npm's certified
`oidc-provider`, started here): an analyst signs in with the provider and works a ticket, the
events record their e-mail; a user of no mapped group sees the no-access page; a reader sees no
control that writes; sign-out and a revoked session end it; a forged or replayed state, a wrong
nonce, an expired ID token and one from another issuer are refused; a cross-site POST without the
CSRF token is refused; a bearer token works beside it unchanged."""

import asyncio
import re
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import Any, NamedTuple

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from playwright.async_api import Browser, BrowserContext, Page, expect

from services.api.app import create_app
from services.api.ratelimit import RateLimiter
from services.auth.tokens import TokenService
from services.bootstrap import make_handler
from services.devstack.embedded import free_port
from services.eventstore import db
from tests.e2e.oidc import provider
from tests.e2e.test_console import browser  # noqa: F401  (the fixture)
from tests.integration.support import configure, ingest, lc, projecting, sso_settings

ORG = "sso-org"
ACCOUNTS = {
    "alice": {"email": "alice@corp.example", "groups": ["soc-analysts", "everyone"]},
    "rita": {"email": "rita@corp.example", "groups": ["soc-readers"]},
    "nobody": {"email": "nobody@corp.example", "groups": ["marketing"]},
}
ROLES = {"soc-analysts": ["investigation.get", "investigation.set"], "soc-readers": ["investigation.get"]}


class Sso(NamedTuple):
    base: str
    issuer: str
    numbers: dict[str, int]


@pytest.fixture(scope="module")
def ports() -> Iterator[tuple[int, str]]:
    """The provider (started once for the module), and the port the console will listen on."""
    api_port = free_port()
    with provider(free_port(), f"http://127.0.0.1:{api_port}", ACCOUNTS) as issuer:
        yield api_port, issuer


@pytest.fixture
async def sso(pool: db.Pool, tokens: TokenService, ports: tuple[int, str]) -> AsyncIterator[Sso]:
    api_port, issuer = ports
    settings = sso_settings(issuer, api_port)
    app = create_app(pool, make_handler(), tokens, RateLimiter(10_000, 10_000), oidc=settings)
    client = TestClient(TestServer(app, host="127.0.0.1", port=api_port))
    await client.start_server()
    await configure(pool, ORG, role_mappings=ROLES)
    await ingest(
        pool, [lc(ORG, i, cat=f"sso-{name}", sensor=f"s{i}") for i, name in enumerate(("a", "b", "c"))]
    )
    async with projecting(pool):
        await asyncio.sleep(0.3)
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT detection_cat, ticket_number FROM tickets WHERE oid = $1", ORG)
        yield Sso(f"http://127.0.0.1:{api_port}", issuer, {r[0]: r[1] for r in rows})
    await client.close()


async def sign_in_with_provider(page: Page, base: str, login: str, path: str = "/") -> None:
    """From the console's sign-in page through the provider's own sign-in form, and back."""
    page.set_default_timeout(15_000)
    await page.goto(base + path)
    await page.get_by_role("button", name="Sign in with single sign-on").click()
    await page.locator("input[name=login]").fill(login)
    await page.locator("input[name=password]").fill("any password: the dev interactions take any")
    await page.locator("button[type=submit]").click()


async def session_cookie(context: BrowserContext) -> dict[str, Any]:
    [cookie] = [c for c in await context.cookies() if c["name"] == "ticketing_session"]
    return dict(cookie)


async def whoami(page: Page) -> tuple[int, Any]:
    got: list[Any] = await page.evaluate(
        """async () => { const r = await fetch("/api/v1/whoami"); return [r.status, await r.json()]; }"""
    )
    return got[0], got[1]


async def events_by(pool: db.Pool, number: int) -> list[tuple[str, str]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT e.type, e.metadata->>'actor' FROM events e JOIN ticket_index t ON t.ticket_id = e.stream_id"
            " WHERE t.oid = $1 AND t.ticket_number = $2 ORDER BY e.version",
            ORG,
            number,
        )
    return [(r[0], r[1]) for r in rows]


async def test_an_analyst_signs_in_works_a_ticket_as_their_email_and_signs_out(
    browser: Browser,  # noqa: F811
    sso: Sso,
    pool: db.Pool,
    tokens: TokenService,
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await sign_in_with_provider(page, sso.base, "alice")
    await expect(page.locator("#who")).to_contain_text("alice@corp.example")
    await expect(page.locator("#queue")).to_contain_text("sso-a")
    cookie = await session_cookie(context)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]  # (http: dev)
    status, me = await whoami(page)
    assert status == 200 and me["source"] == f"session:{sso.issuer}" and me["subject"] == "alice@corp.example"
    assert me["orgs"] == {ORG: ["investigation.get", "investigation.set"]}

    # works a ticket: the event's `by` is the provider's e-mail
    n = sso.numbers["sso-a"]
    await page.goto(f"{sso.base}/tickets/{n}?oid={ORG}")
    await page.get_by_role("button", name="Move to acknowledged").click()
    await expect(page.locator("#timeline")).to_contain_text("acknowledged")
    assert ("acknowledged", "alice@corp.example") in await events_by(pool, n)

    # a bearer token beside it is unchanged (the header wins, no CSRF token needed)
    bearer = tokens.mint("bot@corp.example", {ORG: ["investigation.get", "investigation.set"]}, ttl_s=60)
    async with aiohttp.ClientSession(cookies={"ticketing_session": cookie["value"]}) as s:
        r = await s.post(
            f"{sso.base}/api/v1/tickets/{n}/notes?oid={ORG}",
            json={"content": "by token", "note_type": "general"},
            headers={"Authorization": f"Bearer {bearer}"},
        )
        assert r.status in (200, 201), await r.text()
    assert ("note_added", "bot@corp.example") in await events_by(pool, n)

    # sign-out: at the service, then at the provider, and back to the console's sign-in
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(re.compile(re.escape(sso.issuer) + ".*"))
    confirm = page.get_by_role("button", name=re.compile("Yes, sign me out", re.I))
    if await confirm.count():
        await confirm.click()
    await page.wait_for_url(sso.base + "/")
    await expect(page.get_by_role("button", name="Sign in with single sign-on")).to_be_visible()
    async with aiohttp.ClientSession(cookies={"ticketing_session": cookie["value"]}) as s:
        r = await s.get(f"{sso.base}/api/v1/whoami")
        assert r.status == 401  # the old cookie is worth nothing now
    await context.close()


async def test_no_mapped_group_sees_no_access_and_a_reader_sees_no_control_that_writes(
    browser: Browser,  # noqa: F811
    sso: Sso,
    pool: db.Pool,
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await sign_in_with_provider(page, sso.base, "nobody")
    await expect(page.get_by_role("heading", name="No access")).to_be_visible()
    await expect(page.locator("main")).to_contain_text("nobody@corp.example")
    await expect(page.locator("#queue")).to_have_count(0)
    # mapped while signed in: it holds from the next request (a reload), no new sign-in
    await configure(pool, ORG, role_mappings={**ROLES, "marketing": ["investigation.get"]})
    await page.reload()
    await expect(page.locator("#queue")).to_contain_text("sso-a")
    await configure(pool, ORG, role_mappings={"marketing": None})  # null takes a group out
    await context.close()

    context = await browser.new_context()
    page = await context.new_page()
    n = sso.numbers["sso-b"]
    await sign_in_with_provider(page, sso.base, "rita", f"/tickets/{n}?oid={ORG}")
    await expect(page.get_by_role("heading", level=1)).to_contain_text(f"Ticket #{n}")
    await expect(page.locator("#timeline")).to_contain_text("created")
    for name in ("Move to acknowledged", "Assign", "Add note", "Add entity", "Merge"):
        await expect(page.get_by_role("button", name=name)).to_have_count(0)
    _, me = await whoami(page)
    status: Any = await page.evaluate(
        """async ([n, oid, csrf]) => (await fetch(`/api/v1/tickets/${n}?oid=${oid}`, {method: "PATCH",
             headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
             body: JSON.stringify({status: "closed"})})).status""",
        [n, ORG, me["csrf_token"]],
    )
    assert status == 403  # with the CSRF token right, the permission still decides
    await context.close()


async def test_a_revoked_session_is_refused_within_seconds(
    browser: Browser,  # noqa: F811
    sso: Sso,
    tokens: TokenService,
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await sign_in_with_provider(page, sso.base, "alice")
    await expect(page.locator("#queue")).to_contain_text("sso-a")
    admin = tokens.mint("lead@corp.example", {ORG: ["org.conf.get", "org.conf.set"]}, ttl_s=60)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as s:
        listed = await (await s.get(f"{sso.base}/api/v1/credentials?oid={ORG}")).json()
        [mine] = [x for x in listed["sessions"] if x["subject"] == "alice@corp.example"]
        assert "csrf_token" not in mine and set(mine["groups"]) == {"soc-analysts", "everyone"}
        r = await s.delete(f"{sso.base}/api/v1/credentials/sessions/{mine['session_id']}?oid={ORG}")
        assert r.status == 200, await r.text()
    for _ in range(25):  # within 5 s
        if (await whoami(page))[0] == 401:
            break
        await asyncio.sleep(0.2)
    assert (await whoami(page))[0] == 401
    await page.reload()
    await expect(page.get_by_role("button", name="Sign in with single sign-on")).to_be_visible()
    await context.close()


async def callback_refused(page: Page, reason: str) -> None:
    await expect(page.get_by_role("heading", name="Sign-in failed")).to_be_visible()
    await expect(page.locator("main")).to_contain_text(reason)
    assert [c for c in await page.context.cookies() if c["name"] == "ticketing_session"] == []


async def test_forged_or_replayed_state_wrong_nonce_expired_or_foreign_id_tokens_are_refused(
    browser: Browser,  # noqa: F811
    sso: Sso,
) -> None:
    # a forged state: no sign-in began with it
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{sso.base}/auth/callback?code=made-up&state=forged")
    await callback_refused(page, "unknown, already used or too old")
    await context.close()

    # a replayed state: the callback of a sign-in that went through, sent again
    context = await browser.new_context()
    page = await context.new_page()
    callbacks: list[str] = []
    page.on(
        "request",
        lambda r: callbacks.append(r.url) if r.url.startswith(f"{sso.base}/auth/callback") else None,
    )
    await sign_in_with_provider(page, sso.base, "alice")
    await expect(page.locator("#queue")).to_contain_text("sso-a")
    await context.close()
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(callbacks[0])
    await callback_refused(page, "unknown, already used or too old")
    await context.close()

    # a wrong nonce: the request to the provider is changed on its way, the provider signs that one
    context = await browser.new_context()
    page = await context.new_page()

    async def other_nonce(route: Any) -> None:
        sent = await route.fetch(max_redirects=0)  # the service's redirect to the provider
        url = urllib.parse.urlsplit(sent.headers["location"])
        query = {**dict(urllib.parse.parse_qsl(url.query)), "nonce": "a-nonce-of-someone-else"}
        changed = urllib.parse.urlunsplit(url._replace(query=urllib.parse.urlencode(query)))
        await route.fulfill(status=302, headers={"Location": changed})

    await page.route(re.compile(re.escape(f"{sso.base}/auth/login")), other_nonce)
    await sign_in_with_provider(page, sso.base, "alice")
    await callback_refused(page, "nonce")
    await context.close()

    # an expired ID token, and one naming another issuer (the provider's knob: its own key and claims)
    for mode, reason in (("expired", "expired"), ("other_issuer", "another issuer")):
        async with aiohttp.ClientSession() as s:
            assert (await s.post(f"{sso.issuer}/__test/forge?mode={mode}")).status == 200
        context = await browser.new_context()
        page = await context.new_page()
        await sign_in_with_provider(page, sso.base, "alice")
        await callback_refused(page, reason)
        await context.close()


async def test_a_cross_site_post_without_the_csrf_token_is_refused(
    browser: Browser,  # noqa: F811
    sso: Sso,
    pool: db.Pool,
) -> None:
    """Another site's page (same host, another port: same-site, so the Lax cookie goes with it)
    posts to the API with the analyst's cookie: refused without the session's CSRF token."""
    n = sso.numbers["sso-c"]
    evil = web.Application()
    page_html = f"""<!doctype html><html><body><script>
      fetch("{sso.base}/api/v1/tickets/{n}/notes?oid={ORG}", {{method: "POST", credentials: "include", mode: "no-cors",
        headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{content: "pwned", note_type: "general"}})}});
    </script></body></html>"""

    async def attack(_: web.Request) -> web.Response:
        return web.Response(text=page_html, content_type="text/html")

    evil.router.add_get("/", attack)
    server = TestServer(evil, host="127.0.0.1", port=free_port())
    await server.start_server()
    context = await browser.new_context()
    page = await context.new_page()
    await sign_in_with_provider(page, sso.base, "alice")
    await expect(page.locator("#queue")).to_contain_text("sso-a")
    answers: list[int] = []  # (the attacker's page cannot read the answer: no-cors; the browser can)
    answered = asyncio.Event()

    def seen(response: Any) -> None:
        if "/notes" in response.url:
            answers.append(response.status)
            answered.set()

    attacker = await context.new_page()
    attacker.on("response", seen)
    await attacker.goto(str(server.make_url("/")))
    await asyncio.wait_for(answered.wait(), 10)
    # 403, not 401: the cookie went with it (the session was recognised) and alice may add notes,
    # so what refused it is the missing CSRF token
    assert answers == [403]
    assert not [e for e in await events_by(pool, n) if e[0] == "note_added"]
    await context.close()
    await server.close()
