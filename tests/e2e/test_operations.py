"""What an operator sees of a run: every process's metrics count what happened, with bounded
labels, and no log line of any process carries a credential."""

import asyncio
import json
import random
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from services.auth import api_keys
from services.devstack.samples import extrahop, generate, key_for
from services.settings import Settings
from tests.e2e.conftest import Services
from tests.e2e.test_pipeline import APPLIANCE_KEY, ORG, Hooks, produce, set_webhook

N, M = 12, 4  # detections, and re-sends of some of them


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def new_key(settings: Settings) -> str:
    from services.bootstrap import create_pool

    pool = await create_pool(settings.as_owner(), max_size=1)
    try:
        async with pool.acquire() as conn:
            return await api_keys.create(conn, ORG, "e2e-extrahop", [api_keys.TRACK], "e2e")
    finally:
        await pool.close()


def test_metrics_count_what_happened_and_no_log_line_holds_a_credential(
    services: Services, settings: Settings
) -> None:
    hooks = Hooks()
    asyncio.run(
        set_webhook(
            settings, f"http://127.0.0.1:{hooks.server_port}/hook", f"http://127.0.0.1:{hooks.server_port}"
        )
    )
    key = asyncio.run(new_key(settings))
    services.start("ingest", "relay", "projector", "scheduler", "api")
    detections = list(generate(ORG, N, seed=11))
    good: list[tuple[bytes | None, bytes | None]] = [
        (key_for(d, ORG), json.dumps(d).encode()) for d in detections
    ]
    no_org = extrahop(random.Random(2), ts_ms=1_763_800_000_000)
    bad = [(b"junk", b"{not json"), (None, json.dumps(no_org).encode()), (ORG.encode(), None)]
    asyncio.run(produce(settings, good + bad + good[:M]))
    body = json.dumps(
        {"fields": {"summary": "ExtraHop Detection: 990001: Lateral movement", "priority": {"id": 70}}}
    )
    request = urllib.request.Request(
        services.api + "/rest/api/issue", data=body.encode(), method="POST",
        headers={"Authorization": f"ExtraHop apikey={key}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 201

    def total() -> int:
        status, page = services.get(f"/api/v1/tickets?oids={ORG}&page_size=200")
        return sum(page["total_counts"].values()) if status == 200 else -1

    services.wait_for(lambda: total() == N + 1, 60, "the tickets")

    def ingest() -> Any:
        return scrape(services.metrics["ingest"])

    services.wait_for(
        lambda: value(ingest(), "ticketing_detections_consumed_total") == N + 3 + M, 30, "ingest counts"
    )
    seen = ingest()
    assert value(seen, "ticketing_detections_ticketed_total") == N
    assert value(seen, "ticketing_detections_deduplicated_total") == M
    assert {r: value(seen, "ticketing_detections_dead_lettered_total", reason=r) for r in ("not_json", "no_org", "empty")} == {
        "not_json": 1, "no_org": 1, "empty": 1,
    }  # fmt: skip
    assert value(seen, "ticketing_ingest_batch_size_count") >= 1
    lag = [v for (name, labels), v in seen.items() if name == "ticketing_ingest_consumer_lag"]
    assert lag and all(v == 0 for v in lag)  # read to the end of every partition it was given

    eh = sum(1 for d in detections if "riskScore" in d) + 1  # and the one through the create-issue door

    def relay() -> Any:
        return scrape(services.metrics["relay"])

    stored = services.get(f"/api/v1/tickets?oids={ORG}&page_size=200")[1]["tickets"]

    def delivered(channel: str) -> float:
        return value(relay(), "ticketing_deliveries_total", channel=channel, outcome="delivered")

    services.wait_for(
        lambda: delivered("extrahop") >= eh and delivered("webhook") >= len(stored), 30, "deliveries"
    )
    seen = relay()
    assert value(seen, "ticketing_events_published_total") >= len(stored)
    assert value(seen, "ticketing_deliveries_total", channel="webhook", outcome="delivered") >= len(stored)
    assert value(seen, "ticketing_delivery_backlog", channel="extrahop") == 0
    services.wait_for(
        lambda: value(scrape(services.metrics["projector"]), "ticketing_subscription_behind_events", subscription="projection:tickets", database="home") == 0
        and value(scrape(services.metrics["projector"]), "ticketing_log_head_position", database="home") > 0,
        30, "the projector caught up",
    )  # fmt: skip
    api = scrape(services.metrics["api"])
    routes = {
        dict(labels).get("route") for (name, labels) in api if name == "ticketing_api_request_seconds_count"
    }
    assert {"/api/v1/tickets", "/rest/api/issue"} <= routes
    assert value(api, "ticketing_db_pool_connections", pool="main", state="max") > 0

    # Bounded labels everywhere: no org id, no raw path, no detection id.
    for label, port in services.metrics.items():
        for _, labels in scrape(port):
            for name, v in labels:
                assert ORG not in v and "?" not in v and "990001" not in v, (label, name, v)
                if name == "route":
                    assert v == "unmatched" or v.startswith("/"), v

    # The org's webhook signing secret, shown once to its admin, then the logs: JSON lines, and no
    # credential in any of them.
    from services.auth.tokens import TokenService

    admin = TokenService(services.env["TICKETING_JWT_SECRET"]).mint(
        "admin@x", {ORG: ["org.conf.set"]}, ttl_s=60
    )
    request = urllib.request.Request(
        services.api + f"/api/v1/config/{ORG}/signing-secret", data=b"{}", method="POST",
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as r:
        signing_secret = json.load(r)["secret"]
    signed = [h for h, _ in hooks.got]
    assert signed and all("X-Ticketing-Signature" in h for h in signed)  # the relay signed with it
    services.stop_all()
    hooks.shutdown()
    for log in services.logs.glob("*.log"):
        text = log.read_text()
        # the key, and its secret part alone (shk_<id>_<secret>; the secret may itself hold a "_")
        for secret in (services.token, admin, key, key.split("_", 2)[-1], APPLIANCE_KEY, signing_secret):
            assert secret not in text, f"{log.name} holds a credential"
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines, log.name
        records = [json.loads(line) for line in lines if line.startswith("{")]
        others = [line for line in lines if not line.startswith("{")]
        assert others == [], f"{log.name}: not JSON lines"
        assert all({"ts", "level", "process", "event"} <= set(r) for r in records)
        if log.name == "ingest.log":  # a batch's line leads to its messages (causation_id of its events)
            batches = [r for r in records if r["event"].startswith("batch of")]
            assert batches and all(r["topic"].endswith("detections") and r["offsets"] for r in batches)
