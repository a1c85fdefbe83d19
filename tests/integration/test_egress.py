"""The egress fence: an org admin cannot aim the relay at loopback, private, link-local or
metadata addresses, however written, neither when setting the URL nor later through DNS; no
redirect is followed."""

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import create_app
from services.api.ratelimit import RateLimiter
from services.auth.tokens import TokenService
from services.bootstrap import make_handler
from services.delivery.egress import EgressRefused, Fence, fenced_session
from services.eventstore import db
from services.outbound.deliveries import Delivery, Request
from tests.conftest import Client, bearer

HOSTILE = [
    "http://127.0.0.1/admin",
    "http://localhost/admin",  # a name that resolves to loopback
    "http://2130706433/",  # 127.0.0.1 in decimal
    "http://0177.0.0.1/",  # in octal
    "http://0x7f000001/",  # in hex
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
    "http://[::1]/",
    "http://169.254.169.254/latest/meta-data/",  # the cloud metadata address
    "http://[fe80::1]/",
    "http://10.0.0.5/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # shared (carrier-grade NAT)
    "http://224.0.0.1/",
    "http://0.0.0.0/",
]


@pytest.mark.parametrize("url", HOSTILE)
async def test_a_url_that_reaches_what_is_not_public_is_refused(url: str) -> None:
    with pytest.raises(EgressRefused):
        await Fence().check(url)


async def test_the_operators_list_and_https_only() -> None:
    await Fence().check("https://93.184.216.34/hook")  # a public address: nothing to resolve
    await Fence.allowing(["127.0.0.1"]).check("http://127.0.0.1:9/hook")
    await Fence.allowing(["hooks.internal"]).check("http://hooks.internal/hook")  # named: not resolved
    with pytest.raises(EgressRefused, match="https"):
        await Fence(https_only=True).check("http://93.184.216.34/hook")
    await Fence.allowing(["127.0.0.0/8"], https_only=True).check("http://127.0.0.1:9/")
    with pytest.raises(EgressRefused):
        await Fence.allowing(["127.0.0.1"]).check("http://127.0.0.2/")  # only what is named


@pytest.fixture
async def strict_api(pool: db.Pool, tokens: TokenService) -> AsyncIterator[Client]:
    """The API with the production fence: no allow list."""
    client = TestClient(TestServer(create_app(pool, make_handler(), tokens, RateLimiter(1000, 1000))))
    await client.start_server()
    yield client
    await client.close()


async def test_setting_a_hostile_url_is_a_422_naming_the_field(
    strict_api: Client, tokens: TokenService
) -> None:
    admin = bearer(tokens.mint("admin@x", {"org-f": ["org.conf.set", "org.conf.get"]}, ttl_s=60))
    for body, field in (
        ({"webhook_url": "http://169.254.169.254/latest/meta-data/"}, "webhook_url"),
        ({"webhook_url": "http://localhost:8080/admin"}, "webhook_url"),
        ({"extrahop": {"url": "http://[::ffff:127.0.0.1]/", "api_key": "appliance-key-1"}}, "extrahop.url"),
    ):
        r = await strict_api.put("/api/v1/config/org-f", json=body, headers=admin)
        assert r.status == 422 and (await r.json())["field"] == field, await r.text()
    config = await (await strict_api.get("/api/v1/config/org-f", headers=admin)).json()
    assert config["webhook_url"] is None and config["extrahop"] is None  # nothing was stored


class Internal:
    """A service on this machine that must never hear from the relay."""

    def __init__(self) -> None:
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(status=204)


@pytest.fixture
async def internal() -> AsyncIterator[tuple[Internal, int]]:
    service = Internal()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", service.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    assert server.port is not None
    yield service, server.port
    await server.close()


async def test_at_send_time_the_fence_holds_whatever_the_name_resolves_to(
    internal: tuple[Internal, int],
) -> None:
    """The URL may have passed when it was set (DNS pointed elsewhere then); the relay's session
    checks the addresses it connects to, and the URL's own literal address, at every send."""
    service, port = internal
    fence = Fence()
    async with fenced_session(fence) as session:
        delivery = Delivery(session, timeout_s=2, pause_s=0.01, fence=fence)
        for url in (f"http://localhost:{port}/", f"http://2130706433:{port}/", f"http://[::ffff:127.0.0.1]:{port}/",
                    f"http://127.0.0.1:{port}/"):  # fmt: skip
            outcome = await delivery.send(Request("POST", url, {}, b"{}", "test"))
            assert (outcome.done, outcome.error) == (
                False,
                "refused by the egress fence (not a public address)",
            ), url
    assert service.hits == 0
    allowed = Fence.allowing(["127.0.0.0/8"])
    async with fenced_session(allowed) as session:  # the dev stack's list lets it through
        outcome = await Delivery(session, fence=allowed).send(
            Request("POST", f"http://localhost:{port}/", {}, b"{}", "t")
        )
    assert outcome.done and service.hits == 1


async def test_a_redirect_is_not_followed(internal: tuple[Internal, int]) -> None:
    service, port = internal

    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{port}/internal-admin")

    app = web.Application()
    app.router.add_post("/hook", moved)
    outside = TestServer(app, host="127.0.0.1")
    await outside.start_server()
    try:
        fence = Fence.allowing(["127.0.0.1/32"])
        async with fenced_session(fence) as session:
            outcome = await Delivery(session, pause_s=0.01, fence=fence).send(
                Request("POST", str(outside.make_url("/hook")), {}, b"{}", "t")
            )
    finally:
        await outside.close()
    assert (outcome.done, outcome.error) == (False, "HTTP 302") and service.hits == 0
