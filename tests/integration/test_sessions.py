"""Console sessions (issue 34) on a real database: what a session may do comes from the orgs'
`role_mappings` at every request; idle and absolute timeouts end it; its writes need its CSRF
token; an operator comes from the settings' group only; a bearer token beside a cookie wins; a
sign-in's state is used once and not after ten minutes. (The flow with a real provider, in
Chromium: tests/e2e/test_sso.py.)"""

from typing import Any

import pytest

from services.auth import sessions
from services.auth.oidc import Identity
from services.auth.tokens import TokenService
from services.eventstore import db
from tests.conftest import bearer
from tests.integration.support import configure, ingest, lc, serve, sso_settings

ORG, OTHER = "sess-a", "sess-b"


async def new_session(pool: db.Pool, *groups: str, subject: str = "sam@corp.example") -> str:
    async with pool.acquire() as conn:
        return await sessions.open_session(
            conn, Identity(subject, "sub-sam", tuple(groups), "id-token"), "http://idp.example", 3600
        )


async def test_a_sessions_rights_come_from_role_mappings_at_every_request(
    pool: db.Pool, tokens: TokenService
) -> None:
    client = await serve(pool, tokens, oidc=sso_settings())
    await configure(pool, ORG, role_mappings={"analysts": ["investigation.get", "investigation.set"]})
    await configure(
        pool, OTHER, role_mappings={"analysts": ["investigation.get"], "admins": ["org.conf.set"]}
    )
    await ingest(pool, [lc(ORG, 1, cat="sess-one")])
    cookie = await new_session(pool, "analysts", "unrelated")
    try:
        client.session.cookie_jar.update_cookies({sessions.COOKIE: cookie})
        me = await (await client.get("/api/v1/whoami")).json()
        assert me["orgs"] == {ORG: ["investigation.get", "investigation.set"], OTHER: ["investigation.get"]}
        assert me["source"] == "session:http://idp.example" and me["subject"] == "sam@corp.example"
        assert not me["operator"] and len(me["csrf_token"]) > 30
        # a mapping changed: the next request has it
        await configure(pool, OTHER, role_mappings={"analysts": None})
        me = await (await client.get("/api/v1/whoami")).json()
        assert list(me["orgs"]) == [ORG]

        # a write needs the session's CSRF token, whatever the permission says
        note = {"content": "from a session", "note_type": "general"}
        r = await client.post(f"/api/v1/tickets/1/notes?oid={ORG}", json=note)
        assert r.status == 403 and "X-CSRF-Token" in (await r.json())["error"]
        r = await client.post(
            f"/api/v1/tickets/1/notes?oid={ORG}", json=note, headers={"X-CSRF-Token": "someone-elses"}
        )
        assert r.status == 403
        r = await client.post(
            f"/api/v1/tickets/1/notes?oid={ORG}", json=note, headers={"X-CSRF-Token": me["csrf_token"]}
        )
        assert r.status == 201, await r.text()

        # a bearer token beside the cookie is the credential: no CSRF token, its own subject
        token = tokens.mint("bot@corp.example", {ORG: ["investigation.get"]}, ttl_s=60)
        me = await (await client.get("/api/v1/whoami", headers=bearer(token))).json()
        assert me["subject"] == "bot@corp.example" and me["source"] == "token" and me["csrf_token"] is None
    finally:
        await client.close()


@pytest.mark.parametrize(
    "change",
    [
        "last_seen_at = now() - interval '31 minutes'",  # idle past TICKETING_SESSION_IDLE_TIMEOUT (30m)
        "expires_at = now() - interval '1 second'",  # past the absolute timeout
        "revoked_at = now()",
    ],
)
async def test_an_idle_an_expired_or_a_revoked_session_is_refused(
    pool: db.Pool, tokens: TokenService, change: str
) -> None:
    client = await serve(pool, tokens, oidc=sso_settings())
    cookie = await new_session(pool, "analysts")
    try:
        client.session.cookie_jar.update_cookies({sessions.COOKIE: cookie})
        assert (await client.get("/api/v1/whoami")).status == 200
        async with pool.acquire() as conn:
            await conn.execute(
                f"UPDATE console_sessions SET {change} WHERE digest = $1", sessions.digest(cookie)
            )
        r = await client.get("/api/v1/whoami")
        assert r.status == 401 and "sign in again" in (await r.json())["error"]
    finally:
        await client.close()


async def test_operators_come_from_the_settings_group_never_from_an_orgs_configuration(
    pool: db.Pool, tokens: TokenService
) -> None:
    client = await serve(pool, tokens, oidc=sso_settings())  # operator group: soc-operators
    admin = bearer(tokens.mint("lead@corp.example", {ORG: ["org.conf.get", "org.conf.set"]}, ttl_s=60))
    refused: list[dict[str, list[str]]] = [
        {"soc-operators": ["operator"]},
        {"g": ["ticket.track"]},
        {"g": []},
        {"": ["org.conf.get"]},
    ]
    try:
        for bad in refused:
            r = await client.put(f"/api/v1/config/{ORG}", json={"role_mappings": bad}, headers=admin)
            body: dict[str, Any] = await r.json()
            assert r.status == 422 and body["field"].startswith("role_mappings"), body
        client.session.cookie_jar.update_cookies({sessions.COOKIE: await new_session(pool, "soc-operators")})
        me = await (await client.get("/api/v1/whoami")).json()
        assert me["operator"] and "org.conf.set" in me["orgs"]["*"]
    finally:
        await client.close()


async def test_a_sign_ins_state_is_used_once_and_not_after_ten_minutes(pool: db.Pool) -> None:
    async with pool.acquire() as conn:
        await sessions.begin_login(conn, "state-1", "nonce-1", "verifier-1", "/reports")
        assert await sessions.finish_login(conn, "state-1") == ("nonce-1", "verifier-1", "/reports")
        assert await sessions.finish_login(conn, "state-1") is None  # replayed
        assert await sessions.finish_login(conn, "state-forged") is None
        await sessions.begin_login(conn, "state-2", "nonce-2", "verifier-2", "/")
        await conn.execute(
            "UPDATE oidc_logins SET created_at = now() - interval '11 minutes' WHERE state_digest = $1",
            sessions.digest("state-2"),
        )
        assert await sessions.finish_login(conn, "state-2") is None
        stored = await conn.fetchval("SELECT count(*) FROM oidc_logins WHERE nonce LIKE 'nonce-%'")
        assert stored == 0  # what was used or is stale is gone
