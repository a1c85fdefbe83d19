"""Noise control over Kafka, through the real processes (issue 31): entity-keyed and default
grouping side by side, every grouped detection naming its rule, a suppression holding 100
detections and letting the next through once ended, recurrence with `reopen` and with `link`, and
a merge undone by a split, checked from the event store."""

import asyncio
import json
import urllib.request
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.events import DetectionAdded, TicketCreated, decode_ticket_event
from domain.ticket import fold
from services.auth.tokens import TokenService
from services.settings import Settings
from tests.e2e.conftest import Services, query
from tests.e2e.test_pipeline import produce

REOPEN, LINK = "noise-reopen", "noise-link"
RULES = [{"name": "user-logons", "match": {"category": "logon_*"}, "key": ["user"], "window_minutes": 120}]


def lc(oid: str, cat: str, sensor: str, user: str | None = None, minutes: float = 0) -> dict[str, Any]:
    at = datetime.now(UTC) + timedelta(minutes=minutes)
    d: dict[str, Any] = {"detect_id": str(uuid.uuid4()), "cat": cat, "priority": 4, "ts": int(at.timestamp() * 1000),
                         "routing": {"oid": oid, "sid": sensor, "hostname": f"host-{sensor}"}}  # fmt: skip
    if user:
        d["detect"] = {"event": {"USER_NAME": user}}
    return d


def publish(settings: Settings, detections: list[dict[str, Any]]) -> None:
    """Keyed by org: a rule keyed on a user groups across sensors, so its detections must be read
    in order (docs/noise-control.md, partitioning)."""
    messages: list[tuple[bytes | None, bytes | None]] = [
        (d["routing"]["oid"].encode(), json.dumps(d).encode()) for d in detections
    ]
    asyncio.run(produce(settings, messages))


class Api:
    """The API with a token that may change both orgs (configuration included)."""

    def __init__(self, services: Services) -> None:
        perms = ["investigation.get", "investigation.set", "org.conf.get", "org.conf.set"]
        token = TokenService(services.env["TICKETING_JWT_SECRET"]).mint(
            "lead@example.com", {REOPEN: perms, LINK: perms}, ttl_s=3600
        )
        self.base, self.auth = services.api, {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self.auth, **({"Content-Type": "application/json"} if data else {})}
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                status, answer = r.status, json.load(r)
        except urllib.error.HTTPError as e:
            status, answer = e.code, json.load(e)
        assert status == expect, (method, path, status, answer)
        return answer

    def resolve(self, oid: str, number: int) -> None:
        for status in ("in_progress", "resolved"):
            self.call("PATCH", f"/api/v1/tickets/{number}?oid={oid}", {"status": status})


def tickets(services: Services, oid: str) -> list[dict[str, Any]]:
    status, body = services.get(f"/api/v1/tickets?oids={oid}&page_size=200&sort=ticket_number&order=asc")
    return body["tickets"] if status == 200 else []


def streams(settings: Settings, oid: str) -> dict[Any, list[Any]]:
    rows = query(
        settings,
        "SELECT e.stream_id, e.type, e.data::text, coalesce((e.metadata->>'schema')::int, 1) FROM events e"
        f" JOIN ticket_index i ON i.ticket_id = e.stream_id WHERE i.oid = '{oid}' ORDER BY e.stream_id, e.version",
    )
    out: dict[Any, list[Any]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(decode_ticket_event(r[2], r[1], r[3]))
    return out


def test_rules_suppression_recurrence_and_split_over_kafka(services: Services, settings: Settings) -> None:
    services.start("ingest", "projector", "api")
    api = Api(services)
    api.call("PUT", f"/api/v1/config/{REOPEN}", {"auto_grouping_enabled": True, "grouping_rules": RULES,
                                                 "recurrence": {"policy": "reopen", "window_minutes": 60}})  # fmt: skip
    api.call("PUT", f"/api/v1/config/{LINK}", {"recurrence": {"policy": "link", "window_minutes": 60}})

    # 1. One user across two sensors is one ticket; malware keeps category + sensor.
    publish(settings, [lc(REOPEN, "logon_failed", "s1", "alice", -10), lc(REOPEN, "logon_failed", "s2", "alice", -9),
                       lc(REOPEN, "malware", "s1", minutes=-8), lc(REOPEN, "malware", "s1", minutes=-7),
                       lc(REOPEN, "malware", "s2", minutes=-6), lc(LINK, "malware", "s9", minutes=-5)])  # fmt: skip
    services.wait_for(
        lambda: sum(t["detection_count"] for t in tickets(services, REOPEN)) == 5, 60, "5 detections"
    )
    shape = sorted((t["detection_cat"], t["detection_count"]) for t in tickets(services, REOPEN))
    assert shape == [("logon_failed", 2), ("malware", 1), ("malware", 2)]  # alice's two sensors: one ticket
    events = [e for s in streams(settings, REOPEN).values() for e in s]
    grouped = [e for e in events if isinstance(e, TicketCreated | DetectionAdded)]
    assert len(grouped) == 5 and all(e.grouping is not None for e in grouped)  # every one names its rule
    assert sorted(e.grouping.rule for e in grouped if isinstance(e, DetectionAdded) and e.grouping) == [
        "default", "user-logons",
    ]  # fmt: skip

    # 2. A suppression holds 100 detections: no ticket, counted 100; ended, the next one opens a ticket.
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    held = api.call("POST", f"/api/v1/suppressions?oid={REOPEN}", {"match": {"category": "printer_*"},
                    "reason": "print server", "expires_at": expires}, expect=201)  # fmt: skip
    publish(settings, [lc(REOPEN, "printer_jam", "p1", minutes=-4 + i / 1000) for i in range(100)])

    def held_count() -> int:
        listed = api.call("GET", f"/api/v1/suppressions?oid={REOPEN}")["suppressions"]
        return int(listed[0]["held"])

    services.wait_for(lambda: held_count() == 100, 60, "100 held")
    assert len(tickets(services, REOPEN)) == 3
    api.call("DELETE", f"/api/v1/suppressions/{held['suppression_id']}?oid={REOPEN}")
    publish(settings, [lc(REOPEN, "printer_jam", "p1", minutes=-3)])
    services.wait_for(lambda: len(tickets(services, REOPEN)) == 4, 60, "the printer's ticket")
    assert held_count() == 100

    # 3. Recurrence: `reopen` takes the detection back into the resolved ticket; `link` opens a new one.
    malware = next(
        t for t in tickets(services, REOPEN) if (t["detection_cat"], t["sensor_id"]) == ("malware", "s1")
    )
    api.resolve(REOPEN, malware["ticket_number"])
    api.resolve(LINK, 1)
    publish(settings, [lc(REOPEN, "malware", "s1", minutes=1), lc(LINK, "malware", "s9", minutes=1)])

    def reopened() -> bool:
        got = next(t for t in tickets(services, REOPEN) if t["ticket_number"] == malware["ticket_number"])
        return bool(got["status"] == "in_progress" and got["detection_count"] == 3)

    services.wait_for(reopened, 60, "the malware ticket reopened")
    services.wait_for(lambda: len(tickets(services, LINK)) == 2, 60, "the linked ticket")
    assert tickets(services, LINK)[1]["related_ticket_numbers"] == [1]
    services.wait_for(
        lambda: tickets(services, LINK)[0]["related_ticket_numbers"] == [2], 30, "the link back"
    )
    timeline = api.call("GET", f"/api/v1/tickets/{malware['ticket_number']}?oid={REOPEN}")["events"]
    reopening = next(e for e in timeline if e["type"] == "reopened")
    assert reopening["metadata"]["detection_id"] in {d for s in streams(settings, REOPEN).values()
                                                    for e in s if isinstance(e, DetectionAdded)
                                                    for d in [e.detection.detection_id]}  # fmt: skip

    # 4. A merge of two tickets undone by a split: every detection on exactly one live ticket.
    logons = next(t for t in tickets(services, REOPEN) if t["detection_cat"] == "logon_failed")
    other = next(
        t for t in tickets(services, REOPEN) if (t["detection_cat"], t["sensor_id"]) == ("malware", "s2")
    )
    before = {s.ticket_id: set(s.detections) for s in map(fold, streams(settings, REOPEN).values()) if s}
    api.call("POST", "/api/v1/tickets/merge", {"oid": REOPEN, "target_ticket_number": logons["ticket_number"],
                                               "source_ticket_numbers": [other["ticket_number"]]})  # fmt: skip
    moved = sorted(before[uuid.UUID(other["ticket_id"])])
    split = api.call("POST", f"/api/v1/tickets/{logons['ticket_number']}/split?oid={REOPEN}",
                     {"detection_ids": moved}, expect=201)  # fmt: skip
    states = [s for s in map(fold, streams(settings, REOPEN).values()) if s is not None]
    where = Counter(d for s in states if s.status != "merged" for d in s.detections)
    assert set(where.values()) == {1} and len(where) == sum(len(v) for v in before.values())
    new = next(s for s in states if s.ticket_number == split["ticket_number"])
    assert sorted(new.detections) == moved and new.related_ticket_numbers == (logons["ticket_number"],)
    assert next(s for s in states if s.ticket_id == uuid.UUID(other["ticket_id"])).status == "merged"
