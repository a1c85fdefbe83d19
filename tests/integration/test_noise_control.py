"""Noise control on the real database, through the intake every door uses (issue 31): grouping
rules and their reasons, suppressions, recurrence, split, and the rule report against a plain
computation from the events."""

import statistics
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from domain.events import DetectionAdded, Reopened, TicketCreated, TicketEvent, decode_ticket_event
from domain.suppressions import DetectionsSuppressed
from domain.ticket import TicketState, fold
from projections.registry import all_projections
from services.auth.tokens import TokenService
from services.eventstore import db
from services.eventstore.subscription import catch_up
from tests.conftest import Client, bearer
from tests.integration.support import configure, ingest, serve

ORG = "noise-org"
RULES = [
    {"name": "user-logons", "match": {"category": "logon_*"}, "key": ["user"], "window_minutes": 120},
    {"name": "scans", "match": {"category": "scan", "priority_max": 5}, "key": ["category", "src_ip"],
     "window": "sliding", "window_minutes": 10, "max_span_minutes": 60, "max_detections": 50},
]  # fmt: skip


def now_ms(minutes: float = 0) -> int:
    return int((datetime.now(UTC) + timedelta(minutes=minutes)).timestamp() * 1000)


def lc(
    cat: str,
    sensor: str,
    minutes: float = 0,
    user: str | None = None,
    ip: str | None = None,
    priority: int = 3,
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "detect_id": str(uuid.uuid4()),
        "cat": cat,
        "priority": priority,
        "ts": now_ms(minutes),
        "routing": {"oid": ORG, "sid": sensor, "hostname": f"host-{sensor}"},
    }
    if user:
        d["detect"] = {"event": {"USER_NAME": user}}
    if ip:
        d["routing"]["int_ip"] = ip
    return d


async def ticket_events(pool: db.Pool, oid: str = ORG) -> dict[uuid.UUID, list[TicketEvent]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT e.stream_id, e.type, e.data::text, coalesce((e.metadata->>'schema')::int, 1)"
            " FROM events e JOIN ticket_index i ON i.ticket_id = e.stream_id WHERE i.oid = $1"
            " ORDER BY e.stream_id, e.version",
            oid,
        )
    out: dict[uuid.UUID, list[TicketEvent]] = defaultdict(list)
    for r in rows:
        out[r[0]].append(decode_ticket_event(r[2], r[1], r[3]))
    return out


async def states(pool: db.Pool) -> dict[uuid.UUID, TicketState]:
    found = {}
    for tid, events in (await ticket_events(pool)).items():
        state = fold(events)
        assert state is not None
        found[tid] = state
    return found


async def project(pool: db.Pool) -> None:
    for p in all_projections():
        await catch_up(pool, p.name, p.apply, limit=10_000)


def admin(tokens: TokenService) -> dict[str, str]:
    perms = ["investigation.get", "investigation.set", "org.conf.get", "org.conf.set"]
    return bearer(tokens.mint("lead@example.com", {ORG: perms}, ttl_s=600))


@pytest.fixture
async def client(pool: db.Pool, tokens: TokenService) -> Any:
    c = await serve(pool, tokens)
    yield c
    await c.close()


async def test_rules_group_by_entity_and_name_their_reason(pool: db.Pool) -> None:
    await configure(pool, ORG, auto_grouping_enabled=True, grouping_rules=RULES)
    await ingest(
        pool,
        [
            lc("logon_failed", "s1", 0, user="alice"),
            lc("logon_failed", "s2", 1, user="alice"),  # another sensor, the same user: same ticket
            lc("logon_odd_hours", "s3", 2, user="alice"),  # the rule's glob: still her ticket
            lc("logon_failed", "s1", 3, user="bob"),  # another user: another ticket
            lc("logon_failed", "s1", 4),  # no user: the rule does not match, the default keys group it
            lc("malware", "s1", 5),
            lc("malware", "s1", 6),  # category + sensor, as without rules
            lc("malware", "s2", 7),
        ],
    )
    found = await states(pool)
    by_first = {s.first_detection.detection_cat + "/" + s.first_detection.sensor_id + "/" + str(
        s.first_detection.entities.user if s.first_detection and s.first_detection.entities else None
    ): s for s in found.values() if s.first_detection}  # fmt: skip
    assert by_first["logon_failed/s1/alice"].detection_count == 3
    assert by_first["logon_failed/s1/bob"].detection_count == 1
    assert by_first["malware/s1/None"].detection_count == 2
    assert by_first["malware/s2/None"].detection_count == 1
    assert len(found) == 5
    reasons = [
        (type(e).__name__, e.grouping.rule, e.grouping.key)
        for events in (await ticket_events(pool)).values()
        for e in events
        if isinstance(e, TicketCreated | DetectionAdded) and e.grouping is not None
    ]
    assert len(reasons) == 8  # every grouped detection says why
    assert ("DetectionAdded", "user-logons", {"user": "alice"}) in reasons
    assert ("DetectionAdded", "default", {"category": "malware", "sensor": "s1"}) in reasons
    added = [r for r in reasons if r[0] == "DetectionAdded"]
    assert sorted(r[1] for r in added) == ["default", "user-logons", "user-logons"]


async def test_the_detections_list_shows_the_grouping(
    pool: db.Pool, client: Client, tokens: TokenService
) -> None:
    await configure(pool, ORG, grouping_rules=RULES)
    await ingest(pool, [lc("scan", "s1", 0, ip="10.0.0.9"), lc("scan", "s2", 5, ip="10.0.0.9")])
    await project(pool)
    r = await client.get(f"/api/v1/tickets/1/detections?oid={ORG}", headers=admin(tokens))
    body = await r.json()
    assert r.status == 200, body
    [first, second] = body["detections"]
    assert second["grouping"] == {
        "rule": "scans", "key": {"category": "scan", "src_ip": "10.0.0.9"}, "window_minutes": 10,
        "window": "sliding", "max_span_minutes": 60, "max_detections": 50,
    }  # fmt: skip
    assert first["grouping"]["rule"] == "scans" and first["entities"] == {"src_ip": "10.0.0.9"}


async def test_sliding_windows_extend_up_to_their_span(pool: db.Pool) -> None:
    await configure(pool, ORG, grouping_rules=RULES)
    # Each 8 minutes after the last: a fixed 10-minute window would have split at the second.
    await ingest(pool, [lc("scan", "s1", m, ip="10.0.0.7") for m in (0, 8, 16, 24, 32, 40, 48, 56, 64)])
    counts = sorted(s.detection_count for s in (await states(pool)).values())
    assert counts == [1, 8]  # the ninth is 64 minutes after the first: past the 60-minute span


@pytest.mark.parametrize("bad", [
    ({"grouping_rules": [{"name": "x", "key": ["colour"]}]}, "grouping_rules[0].key[0]"),
    ({"grouping_rules": [{"key": ["user"]}]}, "grouping_rules[0].name"),
    ({"grouping_rules": [{"name": "x", "key": ["user"], "window": "sliding", "window_minutes": 30,
                          "max_span_minutes": 10}]}, "grouping_rules[0].max_span_minutes"),
    ({"grouping_rules": [{"name": "x", "key": ["user"]}, {"name": "X", "key": ["src_ip"]}]},
     "grouping_rules[1].name"),
    ({"grouping_rules": [{"name": "x", "key": ["user"], "match": {"priority_min": 7, "priority_max": 2}}]},
     "grouping_rules[0].match.priority_min"),
    ({"recurrence": {"policy": "sometimes"}}, "recurrence.policy"),
])  # fmt: skip
async def test_invalid_rules_are_a_422_naming_the_field(
    client: Client, tokens: TokenService, bad: tuple[dict[str, Any], str]
) -> None:
    patch, field = bad
    r = await client.put(f"/api/v1/config/{ORG}", json=patch, headers=admin(tokens))
    body = await r.json()
    assert r.status == 422 and body["field"] == field, body


async def test_a_suppression_holds_counts_and_ends(
    pool: db.Pool, client: Client, tokens: TokenService
) -> None:
    expires = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    r = await client.post(
        f"/api/v1/suppressions?oid={ORG}",
        json={"match": {"category": "noisy_*"}, "key_values": {"sensor": "s1"}, "reason": "known scanner",
              "expires_at": expires},
        headers=admin(tokens),
    )  # fmt: skip
    created = await r.json()
    assert r.status == 201, created
    held = [lc("noisy_scan", "s1", i / 10) for i in range(100)]
    await ingest(
        pool, [*held[:60], lc("noisy_scan", "s2", 1), lc("noisy_scan", "s1", 2, priority=9), *held[60:]]
    )
    found = await states(pool)
    # Another sensor is not held, and neither is a critical detection (the suppression does not say so).
    assert sorted((s.first_detection.sensor_id, s.severity) for s in found.values() if s.first_detection) == [
        ("s1", "critical"), ("s2", "medium"),
    ]  # fmt: skip
    r = await client.get(f"/api/v1/suppressions?oid={ORG}", headers=admin(tokens))
    [row] = (await r.json())["suppressions"]
    assert (row["held"], row["active"], row["last_detection_id"]) == (100, True, held[-1]["detect_id"])
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT type, data::text FROM events WHERE stream_id = $1 ORDER BY version",
                                uuid.UUID(created["suppression_id"]))  # fmt: skip
    kept = [d.detection_id for r_ in rows if r_[0] == "detections_suppressed"
            for d in msgspec.json.decode(r_[1], type=DetectionsSuppressed).detections]  # fmt: skip
    assert kept == [h["detect_id"] for h in held]  # every held detection is kept, in order
    assert rows[0][0] == "suppression_created"
    # A re-delivery of the batch is not counted twice.
    await ingest(pool, held[:10])
    r = await client.delete(
        f"/api/v1/suppressions/{created['suppression_id']}?oid={ORG}", headers=admin(tokens)
    )
    ended = await r.json()
    assert r.status == 200 and ended["active"] is False and ended["ended_at"] and ended["held"] == 100, ended
    await ingest(pool, [lc("noisy_scan", "s1", 30)])
    assert len(await states(pool)) == 3  # ended: the next one opens a ticket
    async with pool.acquire() as conn:
        types = [
            r_[0]
            for r_ in await conn.fetch(
                "SELECT type FROM events WHERE stream_id = $1 ORDER BY version",
                uuid.UUID(created["suppression_id"]),
            )
        ]
    assert types[0] == "suppression_created" and types[-1] == "suppression_ended"


@pytest.mark.parametrize("body,field", [
    ({"match": {}, "reason": "r", "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
    ({"match": {}, "reason": "r", "expires_at": "PLUS40D"}, "expires_at"),
    ({"match": {}, "reason": "", "expires_at": "PLUS1D"}, "reason"),
    ({"match": {}, "reason": "r", "expires_at": "PLUS1D", "key_values": {"colour": "x"}}, "key_values"),
    ({"match": {"priority_min": 11}, "reason": "r", "expires_at": "PLUS1D"}, "match.priority_min"),
])  # fmt: skip
async def test_invalid_suppressions_are_a_422_naming_the_field(
    client: Client, tokens: TokenService, body: dict[str, Any], field: str
) -> None:
    days = {"PLUS40D": 40, "PLUS1D": 1}.get(body["expires_at"])
    if days:
        body = {**body, "expires_at": (datetime.now(UTC) + timedelta(days=days)).isoformat()}
    r = await client.post(f"/api/v1/suppressions?oid={ORG}", json=body, headers=admin(tokens))
    answer = await r.json()
    assert r.status == 422 and answer["field"].startswith(field), answer


async def resolve(client: Client, tokens: TokenService, number: int) -> None:
    for status in ("in_progress", "resolved"):
        r = await client.patch(
            f"/api/v1/tickets/{number}?oid={ORG}", json={"status": status}, headers=admin(tokens)
        )
        assert r.status == 200, await r.json()


async def test_recurrence_reopens(pool: db.Pool, client: Client, tokens: TokenService) -> None:
    await configure(
        pool, ORG, auto_grouping_enabled=True, recurrence={"policy": "reopen", "window_minutes": 60}
    )
    await ingest(pool, [lc("malware", "s1", -5)])
    await resolve(client, tokens, 1)
    again = lc("malware", "s1", 1)
    await ingest(pool, [again, lc("malware", "s1", 2)])
    [state] = (await states(pool)).values()
    assert state.status == "in_progress" and state.detection_count == 3
    events = next(iter((await ticket_events(pool)).values()))
    [reopened] = [e for e in events if isinstance(e, Reopened)]
    assert reopened.detection_id == again["detect_id"]


async def test_recurrence_links(pool: db.Pool, client: Client, tokens: TokenService) -> None:
    await configure(pool, ORG, recurrence={"policy": "link", "window_minutes": 60})
    await ingest(pool, [lc("malware", "s1", -5)])
    await resolve(client, tokens, 1)
    await ingest(pool, [lc("malware", "s1", 1), lc("malware", "s1", 90)])  # the second: past the window
    found = sorted((await states(pool)).values(), key=lambda s: s.ticket_number)
    assert [(s.ticket_number, s.status, s.related_ticket_numbers) for s in found] == [
        (1, "resolved", (2,)), (2, "new", (1,)), (3, "new", ()),
    ]  # fmt: skip
    r = await client.get(f"/api/v1/tickets/2?oid={ORG}", headers=admin(tokens))
    body = await r.json()
    assert body["ticket"]["related_ticket_numbers"] == [1]
    assert body["events"][0]["metadata"]["related_ticket_number"] == 1


async def test_a_split_undoes_a_merge(pool: db.Pool, client: Client, tokens: TokenService) -> None:
    await configure(pool, ORG, auto_grouping_enabled=True)
    first = [lc("malware", "s1", m) for m in (0, 1, 2)]
    second = [lc("lateral", "s2", m, priority=9) for m in (0, 1)]
    await ingest(pool, [*first, *second])
    r = await client.post(
        "/api/v1/tickets/merge",
        json={"oid": ORG, "target_ticket_number": 1, "source_ticket_numbers": [2]},
        headers=admin(tokens),
    )
    assert r.status == 200, await r.json()
    moved = [d["detect_id"] for d in second]
    before = {s.ticket_number: s for s in (await states(pool)).values()}[1].severity
    r = await client.post(
        f"/api/v1/tickets/1/split?oid={ORG}", json={"detection_ids": moved}, headers=admin(tokens)
    )
    body = await r.json()
    assert r.status == 201 and body["ticket_number"] == 3, body
    found = {s.ticket_number: s for s in (await states(pool)).values()}
    where = Counter(did for s in found.values() if s.status != "merged" for did in s.detections)
    assert set(where.values()) == {1} and len(where) == 5  # every detection on exactly one live ticket
    assert set(found[3].detections) == set(moved) and found[3].severity == "critical"
    assert found[1].severity == before  # the original keeps its severity (the seed never downgrades)
    assert found[2].status == "merged"  # never revived
    assert found[1].related_ticket_numbers == (3,) and found[3].related_ticket_numbers == (1,)
    # Refusals: a detection not on the ticket, all of them, a merged ticket.
    for number, ids, status in ((1, ["nope"], 422), (1, [d["detect_id"] for d in first], 422),
                                (2, moved, 409)):  # fmt: skip
        r = await client.post(f"/api/v1/tickets/{number}/split?oid={ORG}", json={"detection_ids": ids},
                              headers=admin(tokens))  # fmt: skip
        assert r.status == status, (number, await r.json())
    # The moved detections are claimed by their new ticket: a re-send counts there.
    await ingest(pool, [second[0]], first_offset=1000)
    assert {s.ticket_number: s for s in (await states(pool)).values()}[3].duplicate_count == 1


async def test_the_rule_report_equals_a_plain_computation(
    pool: db.Pool, client: Client, tokens: TokenService
) -> None:
    await configure(
        pool, ORG, auto_grouping_enabled=True, rule_tuning={"false_positive_rate": 0.5, "min_classified": 2}
    )
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    r = await client.post(f"/api/v1/suppressions?oid={ORG}", headers=admin(tokens),
                          json={"match": {"category": "noise"}, "reason": "r", "expires_at": expires})  # fmt: skip
    assert r.status == 201
    # Detected in the hour before now: the report's period ends now.
    await ingest(pool, [lc("malware", f"s{i % 3}", i - 60) for i in range(9)] + [lc("noise", "s1", -50)]
                 + [lc("lateral", f"s{i}", i - 60) for i in range(4)])  # fmt: skip
    for n, verdict in ((1, "false_positive"), (2, "false_positive"), (4, "true_positive")):
        r = await client.patch(f"/api/v1/tickets/{n}?oid={ORG}", json={"classification": verdict},
                               headers=admin(tokens))  # fmt: skip
        assert r.status == 200
    await resolve(client, tokens, 1)
    await project(pool)
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT e.stream_id, e.type, e.data::text, coalesce((e.metadata->>'schema')::int, 1) FROM events e"
            " WHERE e.metadata->>'oid' = $1 ORDER BY e.position", ORG)  # fmt: skip
    expected = plain_report(rows)
    r = await client.get(f"/api/v1/reports/rules?oids={ORG}", headers=admin(tokens))
    got = {(x["category"], x["source"]): x for x in (await r.json())["rules"]}
    assert set(got) == set(expected)
    for key, want in expected.items():
        row = got[key]
        for field, value in want.items():
            if isinstance(value, float):
                assert row[field] == pytest.approx(value), (key, field)
            else:
                assert row[field] == value, (key, field, row)
    assert got[("malware", "")]["needs_tuning"] is True and got[("lateral", "")]["needs_tuning"] is False
    csv = await client.get(f"/api/v1/reports/rules?oids={ORG}&format=csv", headers=admin(tokens))
    text = await csv.text()
    assert csv.status == 200 and csv.content_type == "text/csv"
    assert text.splitlines()[0].startswith("oid,category,source,detections") and len(text.splitlines()) == 4


def plain_report(rows: list[Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The report's figures folded from the events in Python (the whole history is in range)."""
    tickets: dict[uuid.UUID, list[TicketEvent]] = defaultdict(list)
    suppressed: Counter[tuple[str, str]] = Counter()
    for stream, kind, data, schema in rows:
        if kind == "detections_suppressed":
            for d in msgspec.json.decode(data, type=DetectionsSuppressed).detections:
                suppressed[(d.detection_cat, d.detection_source)] += 1
        elif kind not in ("config_updated", "suppression_created", "suppression_ended"):
            tickets[stream].append(decode_ticket_event(data, kind, schema))
    out: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"detections": 0, "grouped": 0, "tickets": 0, "true_positives": 0, "false_positives": 0}
    )
    mttr: dict[tuple[str, str], list[float]] = defaultdict(list)
    on_tickets: Counter[tuple[str, str]] = Counter()
    for events in tickets.values():
        s = fold(events)
        assert s is not None and s.first_detection is not None
        key = (s.first_detection.detection_cat, s.first_detection.detection_source)
        out[key]["tickets"] += 1
        out[key]["true_positives"] += s.classification == "true_positive"
        out[key]["false_positives"] += s.classification == "false_positive"
        if s.resolved_at:
            mttr[key].append((s.resolved_at - s.created_at).total_seconds())
        for d in s.detections.values():
            k = (d.detection_cat, d.detection_source)
            on_tickets[k] += 1
            out[k]["grouped"] += d.detection_id != s.first_detection.detection_id
    for key in set(out) | set(suppressed):
        row = out[key]
        row["suppressed"] = suppressed[key]
        row["detections"] = on_tickets[key] + suppressed[key]
        row["grouped_share"] = row["grouped"] / on_tickets[key] if on_tickets[key] else None
        classified = row["true_positives"] + row["false_positives"]
        row["false_positive_rate"] = row["false_positives"] / classified if classified else None
        row["median_mttr_seconds"] = statistics.median(mttr[key]) if mttr[key] else None
    return dict(out)
