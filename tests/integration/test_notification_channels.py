"""Notification channels' webhook URLs are write-only (issue 32): the configuration and its
events keep a fingerprint, org_secrets the URL; a channel sent again without its URL keeps it, one
removed loses it, and a URL the egress fence refuses is a 422 naming the field. (Delivery of the
notifications themselves is not built yet.)"""

from typing import Any

from services.auth.tokens import TokenService
from services.eventstore import db
from tests.conftest import bearer
from tests.integration.support import serve

ORG = "notify-org"
HOOK = "http://127.0.0.1:9/services/T0/B0/very-secret-path"
TEAMS = "http://127.0.0.1:9/webhookb2/another-secret"


async def everywhere(pool: db.Pool, needle: str) -> list[str]:
    """Every table (but org_secrets) whose rows' text holds `needle`."""
    async with pool.acquire() as conn:
        tables = [r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'org_secrets'")]  # fmt: skip
        return [t for t in tables if await conn.fetchval(f"SELECT count(*) FROM {t} x WHERE x::text LIKE $1", f"%{needle}%")]  # fmt: skip


async def test_channel_urls_are_write_only(pool: db.Pool, tokens: TokenService) -> None:
    client = await serve(pool, tokens)
    admin = bearer(tokens.mint("lead@x", {ORG: ["org.conf.get", "org.conf.set"]}, ttl_s=600))
    channels: list[dict[str, Any]] = [
        {"name": "soc", "type": "slack", "url": HOOK},
        {"name": "leads", "type": "teams", "url": TEAMS},
        {"name": "mail", "type": "email", "to": ["lead@soc.example"]},
    ]
    rules = [{"on": "ticket_opened", "min_severity": "high", "channels": ["soc", "leads", "mail"]}]
    try:
        r = await client.put(f"/api/v1/config/{ORG}", json={"notifications": {"channels": channels, "rules": rules}},
                             headers=admin)  # fmt: skip
        body = await r.text()
        assert r.status == 200 and HOOK not in body and TEAMS not in body, body
        r = await client.get(f"/api/v1/config/{ORG}", headers=admin)
        shown = (await r.json())["notifications"]["channels"]
        assert [c["url_fingerprint"] is not None for c in shown] == [True, True, False]
        assert (
            await everywhere(pool, "very-secret-path") == []
            and await everywhere(pool, "another-secret") == []
        )
        async with pool.acquire() as conn:
            secrets = {
                r[0]: r[1]
                for r in await conn.fetch("SELECT name, secret FROM org_secrets WHERE oid = $1", ORG)
            }
        assert secrets == {"notify:soc": HOOK, "notify:leads": TEAMS}
        # Sent again without its URL, a channel keeps it; one left out loses its secret.
        r = await client.put(f"/api/v1/config/{ORG}", headers=admin, json={"notifications": {
            "channels": [{"name": "soc", "type": "slack"}], "rules": [{"on": "sla_breached", "channels": ["soc"]}]}})  # fmt: skip
        assert r.status == 200, await r.text()
        async with pool.acquire() as conn:
            left = await conn.fetch("SELECT name FROM org_secrets WHERE oid = $1", ORG)
        assert [r[0] for r in left] == ["notify:soc"]
        # A URL the egress fence refuses (not loopback in these tests) names the field.
        r = await client.put(f"/api/v1/config/{ORG}", headers=admin, json={"notifications": {
            "channels": [{"name": "x", "type": "teams", "url": "http://10.1.2.3/hook"}]}})  # fmt: skip
        refused = await r.json()
        assert r.status == 422 and refused["field"] == "notifications.channels[0].url", refused
    finally:
        await client.close()
