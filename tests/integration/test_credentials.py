"""Revocable credentials: an org admin lists the tokens that grant the org and its API keys (with
their last use, never a secret) and revokes one by jti or key id; every API process refuses it
within seconds (two API instances here, as two processes would be)."""

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest

from services.auth import api_keys, credentials
from services.auth.credentials import REFRESH_S
from services.auth.tokens import TokenService
from services.eventstore import db
from tests.conftest import Client, bearer
from tests.integration.support import extrahop, seed, serve

ORG, OTHER = "org-cred", "org-other"


@pytest.fixture
async def two_apis(pool: db.Pool, tokens: TokenService) -> AsyncIterator[tuple[Client, Client]]:
    await seed(pool, 1, oid=ORG)
    first, second = await serve(pool, tokens), await serve(pool, tokens)
    yield first, second
    await first.close()
    await second.close()


async def until_refused(api: Client, path: str, headers: dict[str, str], within_s: float) -> float:
    started = time.monotonic()
    while (await api.get(path, headers=headers)).status != 401:
        assert time.monotonic() - started < within_s, f"still accepted after {within_s} s"
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def test_a_revoked_token_or_key_is_refused_everywhere_within_seconds(
    pool: db.Pool, tokens: TokenService, two_apis: tuple[Client, Client]
) -> None:
    first, second = two_apis
    admin_token = tokens.mint("admin@cred", {ORG: ["org.conf.set"]}, ttl_s=600)
    analyst_token = tokens.mint("ana@cred", {ORG: ["investigation.get"]}, ttl_s=600)
    other_admin = tokens.mint("admin@other", {OTHER: ["org.conf.set"]}, ttl_s=600)
    async with pool.acquire() as conn:
        await credentials.record(conn, admin_token, "test")
        jti = await credentials.record(conn, analyst_token, "test")
        key = await api_keys.create(conn, ORG, "tracker", [api_keys.TRACK], "test")
    key_id = key.split("_")[1]
    admin, analyst = bearer(admin_token), bearer(analyst_token)
    tickets = f"/api/v1/tickets?oids={ORG}"
    for api in (first, second):  # both processes know the token is good, and say it was used
        assert (await api.get(tickets, headers=analyst)).status == 200
    await asyncio.sleep(REFRESH_S)
    assert (await first.get(tickets, headers=analyst)).status == 200  # the refresh writes the last use
    listed = await (await first.get(f"/api/v1/credentials?oid={ORG}", headers=admin)).json()
    mine = {t["jti"]: t for t in listed["tokens"]}
    assert (
        mine[jti]["subject"] == "ana@cred" and mine[jti]["last_used_at"] and mine[jti]["revoked_at"] is None
    )
    assert [k["key_id"] for k in listed["api_keys"]] == [key_id]
    text = str(listed)
    parsed = api_keys.parse(key)  # (its secret may hold "_" itself: split by the key's own shape)
    assert parsed is not None
    assert analyst_token not in text and key not in text and parsed[1] not in text  # no secret

    # Another org's admin cannot revoke ours; ours can, on one process, and the other follows.
    r = await first.delete(f"/api/v1/credentials/tokens/{jti}?oid={OTHER}", headers=bearer(other_admin))
    assert r.status == 404
    r = await first.delete(f"/api/v1/credentials/tokens/{jti}?oid={ORG}", headers=admin)
    assert r.status == 200 and (await r.json()) == {"revoked": jti}
    took = await until_refused(second, tickets, analyst, within_s=REFRESH_S + 2)
    assert (await second.get(tickets, headers=analyst)).status == 401
    assert (
        await second.get(
            tickets, headers=bearer(tokens.mint("ana@cred", {ORG: ["investigation.get"]}, ttl_s=60))
        )
    ).status == 200

    detection = f"/api/v1/detections/1?oid={ORG}"
    assert (await second.patch(detection, json={"assignee": "x"}, headers=extrahop(key))).status in (200, 404)
    r = await first.delete(f"/api/v1/credentials/api-keys/{key_id}?oid={ORG}", headers=admin)
    assert r.status == 200
    started = time.monotonic()
    while (await second.patch(detection, json={"assignee": "x"}, headers=extrahop(key))).status != 401:
        assert time.monotonic() - started < api_keys.CACHE_S + 2, "the revoked key still works"
        await asyncio.sleep(0.2)
    print(f"token refused by the other process after {took:.1f} s")


async def test_the_token_command_records_lists_and_revokes(
    pool: db.Pool, service_env: dict[str, str]
) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**service_env, "DATABASE_URL": service_env["TICKETING_MIGRATION_DATABASE_URL"]}
        return subprocess.run([sys.executable, "-m", "services.cli", "token", *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    made = await asyncio.to_thread(cli, "create", "--sub", "cli@x", "--oid", ORG, "--ttl", "1h")
    assert made.returncode == 0, made.stderr
    listed = await asyncio.to_thread(cli, "list", "--oid", ORG)
    [line] = listed.stdout.splitlines()
    jti = line.split()[0]
    assert "cli@x" in line and "never" in line and made.stdout.strip() not in listed.stdout
    assert (await asyncio.to_thread(cli, "revoke", "--jti", jti)).returncode == 0
    again = await asyncio.to_thread(cli, "revoke", "--jti", jti)
    assert again.returncode != 0 and "no live recorded token" in again.stderr
    assert "revoked" in (await asyncio.to_thread(cli, "list", "--oid", ORG)).stdout
