from collections.abc import AsyncIterator
from typing import Any

import pytest

from projections.registry import all_projections
from services.auth.tokens import TokenService
from services.eventstore import db
from services.eventstore.subscription import catch_up
from tests.conftest import Client, bearer
from tests.integration.support import seed, serve


@pytest.fixture
async def client(pool: db.Pool, tokens: TokenService) -> AsyncIterator[Client]:
    await seed(pool, 60, oid="org-a")
    await seed(pool, 15, oid="org-b")
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    client = await serve(pool, tokens)
    perms = {"org-a": ["investigation.get"], "org-b": ["investigation.get"]}
    client.session.headers.update(bearer(tokens.mint("reader@example.com", perms, ttl_s=600)))
    yield client
    await client.close()


async def get(client: Client, path: str, status: int = 200) -> dict[str, Any]:
    # The LimaCharlie clients send a form content type with an empty body on GET.
    r = await client.get(path, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == status, await r.text()
    assert r.content_type == "application/json"
    body: dict[str, Any] = await r.json()
    return body


async def test_list_shape_counts_and_org_scope(client: Client) -> None:
    body = await get(client, "/api/v1/tickets?oids=org-a")
    assert set(body) == {"tickets", "next_page_token", "total_counts"}
    assert len(body["tickets"]) == 50
    assert body["total_counts"] == {"new": 60}
    assert {t["oid"] for t in body["tickets"]} == {"org-a"}
    ticket = body["tickets"][0]
    for field in (
        "ticket_id", "ticket_number", "oid", "status", "severity", "classification", "assignee",
        "escalation_group", "investigation_id", "summary", "conclusion", "tags", "detection_count",
        "detection_id", "detection_cat", "detection_source", "detection_priority", "sensor_id", "hostname",
        "created_at", "acknowledged_at", "resolved_at", "closed_at", "merged_into_ticket_id",
    ):  # fmt: skip
        assert field in ticket
    # An ExtraHop detection's categories and MITRE ids are its ticket's tags (the samples' are fixed).
    extrahop = ticket["detection_source"] == "extrahop"
    assert ticket["tags"] == (["sec.lateral", "TA0008", "T1021"] if extrahop else [])
    assert ticket["detection_count"] == 1
    both = await get(client, "/api/v1/tickets?oids=org-a,org-b&page_size=200")
    assert len(both["tickets"]) == 75 and both["next_page_token"] is None


async def test_pagination_walks_every_ticket_once(client: Client) -> None:
    for sort in ("created_at", "severity", "ticket_number"):
        for order in ("asc", "desc"):
            seen: list[int] = []
            token = None
            while True:
                query = f"/api/v1/tickets?oids=org-a&page_size=7&sort={sort}&order={order}"
                body = await get(client, query + (f"&page_token={token}" if token else ""))
                seen += [t["ticket_number"] for t in body["tickets"]]
                token = body["next_page_token"]
                if not token:
                    break
            assert sorted(seen) == list(range(1, 61)), (sort, order)
            if sort == "ticket_number":
                assert seen == sorted(seen, reverse=order == "desc")


async def test_severity_sort_orders_by_rank(client: Client) -> None:
    body = await get(client, "/api/v1/tickets?oids=org-a&sort=severity&order=desc&page_size=200")
    rank = {"critical": 4, "high": 3, "medium": 2, "low": 1}
    ranks = [rank[t["severity"]] for t in body["tickets"]]
    assert ranks == sorted(ranks, reverse=True)


async def test_filters(client: Client) -> None:
    all_a = (await get(client, "/api/v1/tickets?oids=org-a&page_size=200"))["tickets"]
    high = await get(client, "/api/v1/tickets?oids=org-a&severity=high,critical&page_size=200")
    assert {t["ticket_id"] for t in high["tickets"]} == {
        t["ticket_id"] for t in all_a if t["severity"] in ("high", "critical")
    }
    assert sum(high["total_counts"].values()) == len(high["tickets"])
    host = all_a[0]["hostname"]
    found = await get(client, f"/api/v1/tickets?oids=org-a&search={host.lower()}&page_size=200")
    assert found["tickets"] and all(
        host.lower() in t["hostname"].lower() or host.lower() in t["detection_cat"].lower()
        for t in found["tickets"]
    )
    sensor = all_a[0]["sensor_id"]
    by_sensor = await get(client, f"/api/v1/tickets?oids=org-a&sensor_id={sensor}&page_size=200")
    assert {t["sensor_id"] for t in by_sensor["tickets"]} == {sensor}
    assert (await get(client, "/api/v1/tickets?oids=org-a&status=closed"))["tickets"] == []
    assert (await get(client, "/api/v1/tickets?oids=org-a&tag=phishing"))["tickets"] == []
    assert (await get(client, "/api/v1/tickets?oids=org-a&assignee=bob@example.com"))["tickets"] == []
    assert (await get(client, "/api/v1/tickets?oids=org-a&classification=pending"))["total_counts"] == {
        "new": 60
    }
    assert (await get(client, "/api/v1/tickets?oids=org-a&search=%25_%25"))["tickets"] == []


async def test_get_ticket_with_timeline_and_detections(client: Client) -> None:
    body = await get(client, "/api/v1/tickets/3?oid=org-b")
    assert set(body) == {"ticket", "events"}
    assert body["ticket"]["ticket_number"] == 3 and body["ticket"]["oid"] == "org-b"
    [event] = body["events"]
    assert set(event) == {"event_id", "type", "by", "ts", "metadata"}
    assert (event["type"], event["by"]) == ("created", "system:ingest")
    assert event["metadata"]["detection"]["detection_id"] == body["ticket"]["detection_id"]
    detections = await get(client, "/api/v1/tickets/3/detections?oid=org-b")
    assert [d["detection_id"] for d in detections["detections"]] == [body["ticket"]["detection_id"]]


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        ("/api/v1/tickets/999?oid=org-a", 404, None),
        ("/api/v1/tickets/3?oid=org-zzz", 404, None),
        ("/api/v1/tickets?oids=org-a,org-zzz", 403, None),
        ("/api/v1/tickets/3", 422, "oid"),
        ("/api/v1/tickets/abc?oid=org-a", 422, "ticket_number"),
        ("/api/v1/tickets/0?oid=org-a", 422, "ticket_number"),
        ("/api/v1/tickets/99999999999?oid=org-a", 422, "ticket_number"),
        ("/api/v1/tickets/999/detections?oid=org-a", 404, None),
        ("/api/v1/tickets?oids=org-a&page_token=garbage", 422, "page_token"),
        ("/api/v1/tickets?oids=org-a&page_size=500", 422, "page_size"),
        ("/api/v1/tickets", 422, "oids"),
        ("/api/v1/nothing-here", 404, None),
    ],
)
async def test_errors_are_json_and_name_the_field(
    client: Client, path: str, status: int, field: str | None
) -> None:
    body = await get(client, path, status)
    assert isinstance(body["error"], str) and body["error"]
    assert body.get("field") == field


async def test_probes(client: Client, pool: db.Pool) -> None:
    assert (await get(client, "/healthz")) == {"status": "ok"}
    ready = await get(client, "/readyz")
    assert ready == {"status": "ready", "behind": {"projection:tickets": 0}}
    await seed(pool, 64, oid="org-a")  # four new tickets the projector has not seen
    assert (await get(client, "/readyz"))["behind"] == {"projection:tickets": 4}
