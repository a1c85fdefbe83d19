"""Escalation policies (issue 32), in simulated time through the real scheduler tick: step 1
notifies at N minutes and step 2 escalates at M (and routing hands the ticket to the group's
analyst), each step once and audited; an acknowledgement before N stops both."""

import json
import uuid
from typing import Any

from services.commands.configs import update_config
from services.commands.handlers import CommandHandler
from services.eventstore import db
from services.eventstore import postgres as store
from services.eventstore.postgres import RecordedEvent
from services.eventstore.subscription import catch_up
from services.outbound.deliveries import enqueue
from services.outbound.notifications import NOTIFICATIONS_NAME, Notifications
from tests.integration.test_sla import ALICE, T0, Clock, open_ticket, run_tick, status

POLICIES = {
    "critical": [
        {"after_minutes": 5, "notify": ["soc"]},
        {"after_minutes": 12, "escalate_to": "tier2", "notify": ["soc", "leads"]},
    ]
}
CHANNELS = {"channels": [{"name": "soc", "type": "email", "to": ["soc@x"]},
                         {"name": "leads", "type": "email", "to": ["leads@x"]}]}  # fmt: skip
ROUTING = {"rules": [{"match": {"escalation_group": "tier2"}, "mode": "round_robin", "analysts": ["t2@x"]}]}


async def configure(pool: db.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        patch = {"notifications": CHANNELS, "escalation_policies": POLICIES, "routing": ROUTING}
        await update_config(conn, "sla-org", patch, ALICE, T0)


async def trail(pool: db.Pool, tid: uuid.UUID) -> list[tuple[str, str, dict[str, Any]]]:
    async with pool.acquire() as conn:
        events = await store.read_stream(conn, tid)
    return [(e.type, e.metadata["actor"], json.loads(e.data)) for e in events if e.type != "created"]


async def test_steps_fire_on_time_once_and_escalate(pool: db.Pool) -> None:
    await configure(pool)
    clock = Clock()
    handler = CommandHandler(clock)
    tid = await open_ticket(pool, handler, "critical")
    low = await open_ticket(pool, handler, "low")  # no policy for its severity
    clock.at(minutes=4, seconds=59)
    assert (await run_tick(pool, handler)).escalation_steps == 0
    clock.at(minutes=5)
    assert (await run_tick(pool, handler)).escalation_steps == 1
    [(kind, actor, step)] = [t for t in await trail(pool, tid) if t[0] == "escalation_step"]
    assert (kind, actor) == ("escalation_step", "system:escalation")
    assert step["step"] == 1 and step["notify"] == ["soc"] and step.get("escalate_to") is None
    clock.at(minutes=11)
    assert (await run_tick(pool, handler)).escalation_steps == 0  # step 1 is not taken twice
    clock.at(minutes=12)
    assert (await run_tick(pool, handler)).escalation_steps == 1
    after = [
        (t, a, d.get("step") or d.get("escalation_group") or d.get("assignee"))
        for t, a, d in await trail(pool, tid)
        if not t.startswith("sla_")  # its SLA clocks run beside the policy
    ]
    assert after == [
        ("escalation_step", "system:escalation", 1),
        ("escalation_step", "system:escalation", 2),
        ("escalated", "system:escalation", "tier2"),
        ("assigned", "system:routing", "t2@x"),
    ]
    clock.at(hours=5)
    assert (await run_tick(pool, handler)).escalation_steps == 0  # the policy is done
    assert [t for t in await trail(pool, low) if t[0] == "escalation_step"] == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT escalation_steps FROM tickets WHERE ticket_id = $1", tid) == 2
    # what the notifier queues for the steps: each step's channels, in words that say why
    notifier = Notifications("https://soc.example/tickets/$ticket_id?oid=$oid")

    async def handle(conn: db.Connection, events: list[RecordedEvent]) -> None:
        await enqueue(conn, notifier, events)

    await catch_up(pool, NOTIFICATIONS_NAME, handle, orgs=notifier.orgs)
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT body FROM delivery_queue WHERE channel = 'notify' ORDER BY position, subject"
        )
    mails = [(m["to"], m["subject"], m["text"]) for m in (json.loads(r[0]) for r in rows)]
    assert [(to, subject.split(":")[0]) for to, subject, _ in mails] == [
        ("soc@x", "[critical] Not acknowledged"),  # step 1
        ("leads@x", "[critical] Not acknowledged"),  # step 2
        ("soc@x", "[critical] Not acknowledged"),
    ]
    assert (
        "in 12 minutes (step 2); escalated to tier2" in mails[1][2]
        and "https://soc.example/tickets/1" in mails[1][2]
    )


async def test_an_acknowledgement_before_the_first_step_stops_the_policy(pool: db.Pool) -> None:
    await configure(pool)
    clock = Clock()
    handler = CommandHandler(clock)
    acked, late = await open_ticket(pool, handler, "critical"), await open_ticket(pool, handler, "critical")
    clock.at(minutes=4)
    await status(pool, handler, acked, "acknowledged")
    clock.at(minutes=6)
    assert (await run_tick(pool, handler)).escalation_steps == 1  # only the other one's step 1
    await status(pool, handler, late, "acknowledged")  # after step 1: stops step 2
    clock.at(minutes=30)
    assert (await run_tick(pool, handler)).escalation_steps == 0
    assert [t for t, _, _ in await trail(pool, acked) if t.startswith("escalat")] == []
    assert [d["step"] for t, _, d in await trail(pool, late) if t == "escalation_step"] == [1]
