"""Task checklists (issue 32): templates put their tasks on new tickets at every door, an open
mandatory task blocks resolve and close with a 409 naming it, completing it lets the resolve
through, and the tasks report gives the median time to complete per title."""

from datetime import UTC, datetime, timedelta
from typing import Any

from projections.registry import all_projections
from services.auth.tokens import TokenService
from services.eventstore import db
from services.eventstore.subscription import catch_up
from tests.conftest import Client, bearer
from tests.integration.support import configure, ingest, lc, serve

ORG = "tasks-org"
TEMPLATES = [
    {"match": {"category": "malware*", "severity": ["high", "critical"]},
     "tasks": [{"title": "Isolate the host", "mandatory": True}, {"title": "Collect memory"}]},
    {"match": {}, "tasks": [{"title": "Write the conclusion", "description": "What happened and why"}]},
]  # fmt: skip


async def call(client: Client, token: str, method: str, path: str, status: int, **kw: Any) -> Any:
    r = await client.request(method, path, headers=bearer(token), **kw)
    body = await r.json()
    assert r.status == status, body
    return body


async def test_templates_mandatory_tasks_and_the_report(pool: db.Pool, tokens: TokenService) -> None:
    await configure(pool, ORG, task_templates=TEMPLATES)
    await ingest(pool, [lc(ORG, 0, cat="malware_dropper", priority=9), lc(ORG, 1, cat="phishing", priority=9),
                        lc(ORG, 2, cat="malware_dropper", sensor="s2", priority=2)])  # fmt: skip
    token = tokens.mint("ana@example.com", {ORG: ["investigation.get", "investigation.set"]}, ttl_s=600)
    client = await serve(pool, tokens)
    try:
        titles = {}
        for n in (1, 2, 3):
            listed = await call(client, token, "GET", f"/api/v1/tickets/{n}/tasks?oid={ORG}", 200)
            titles[n] = [t["title"] for t in listed["tasks"]]
        assert titles == {
            1: ["Isolate the host", "Collect memory", "Write the conclusion"],
            2: ["Write the conclusion"],  # not malware
            3: ["Write the conclusion"],  # malware, but low severity
        }
        base = f"/api/v1/tickets/1?oid={ORG}"
        await call(client, token, "PATCH", base, 200, json={"status": "in_progress"})
        refused = await call(client, token, "PATCH", base, 409, json={"status": "resolved"})
        assert "Isolate the host" in refused["error"]
        refused = await call(client, token, "PATCH", base, 409, json={"status": "closed"})
        assert "Isolate the host" in refused["error"]
        added = await call(client, token, "POST", f"/api/v1/tickets/1/tasks?oid={ORG}", 201,
                           json={"title": "Reset the password", "mandatory": True, "assignee": "bob@example.com"})  # fmt: skip
        tasks = (await call(client, token, "GET", f"/api/v1/tickets/1/tasks?oid={ORG}", 200))["tasks"]
        isolate = next(t for t in tasks if t["title"] == "Isolate the host")
        for task in (isolate, added):
            done = await call(client, token, "PATCH", f"/api/v1/tickets/1/tasks/{task['task_id']}?oid={ORG}", 200,
                              json={"done": True, "assignee": "ana@example.com"})  # fmt: skip
            assert done["done"] and done["assignee"] == "ana@example.com" and done["done_at"]
        again = await call(client, token, "PATCH", f"/api/v1/tickets/1/tasks/{added['task_id']}?oid={ORG}", 200,
                           json={"done": False})  # fmt: skip
        assert again["done"] is False and again["done_at"] is None
        await call(client, token, "PATCH", base, 409, json={"status": "resolved"})
        await call(client, token, "PATCH", f"/api/v1/tickets/1/tasks/{added['task_id']}?oid={ORG}", 200,
                   json={"done": True})  # fmt: skip
        resolved = await call(client, token, "PATCH", base, 200, json={"status": "resolved"})
        assert resolved["ticket"]["status"] == "resolved"
        events = [e["type"] for e in (await call(client, token, "GET", base, 200))["events"]]
        assert events.count("task_added") == 4 and events.count("task_completed") == 3
        assert events.count("task_reopened") == 1 and events.count("task_assigned") == 2
        # Errors name the field; an unknown task is a 404.
        bad = await call(client, token, "POST", f"/api/v1/tickets/1/tasks?oid={ORG}", 422, json={"title": ""})
        assert bad["field"] == "title"
        await call(
            client, token, "PATCH", f"/api/v1/tickets/1/tasks/not-a-uuid?oid={ORG}", 422, json={"done": True}
        )
        await call(client, token, "PATCH", f"/api/v1/tickets/1/tasks/{'0' * 8}-0000-0000-0000-{'0' * 12}?oid={ORG}",
                   404, json={"done": True})  # fmt: skip
        for p in all_projections():
            await catch_up(pool, p.name, p.apply)
        now = datetime.now(UTC)
        params = {
            "oids": ORG,
            "from": (now - timedelta(days=1)).isoformat(),
            "to": (now + timedelta(hours=1)).isoformat(),
        }
        report = await call(client, token, "GET", "/api/v1/reports/tasks", 200, params=params)
        rows = {r["title"]: r for r in report["tasks"]}
        assert rows["Isolate the host"]["completed"] == 1 and rows["Isolate the host"]["open"] == 0
        assert (
            rows["Reset the password"]["completed"] == 1
        )  # completed twice, counted once (reopened between)
        assert rows["Write the conclusion"]["completed"] == 0 and rows["Write the conclusion"]["open"] == 3
        assert rows["Isolate the host"]["median_seconds_to_complete"] >= 0
    finally:
        await client.close()


async def test_invalid_templates_are_a_422_naming_the_field(pool: db.Pool, tokens: TokenService) -> None:
    token = tokens.mint("lead@example.com", {ORG: ["org.conf.set"]}, ttl_s=600)
    client = await serve(pool, tokens)
    try:
        for patch, field in (
            ({"task_templates": [{"tasks": []}]}, "task_templates[0].tasks"),
            ({"task_templates": [{"tasks": [{"title": "x", "urgent": True}]}]}, "task_templates[0].tasks[0].urgent"),
            ({"task_templates": [{"match": {"severity": ["dire"]}, "tasks": [{"title": "x"}]}]},
             "task_templates[0].match.severity"),
        ):  # fmt: skip
            body = await call(client, token, "PUT", f"/api/v1/config/{ORG}", 422, json=patch)
            assert body["field"].startswith(field), body
    finally:
        await client.close()
