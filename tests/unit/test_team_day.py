"""Task templates, mandatory tasks, SLA at risk, routing picks and escalation steps, pure."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain.commands import (
    AddTask,
    AutoClose,
    CheckEscalation,
    CheckSla,
    OpenTicket,
    TaskChanges,
    TicketChanges,
    UpdateTask,
    UpdateTicket,
)
from domain.config import OrgConfig, apply_patch
from domain.errors import InvalidValue, TaskOpen
from domain.escalation import EscalationStep
from domain.events import Escalated, EscalationStepTaken, SlaAtRisk, SlaBreached
from domain.routing import Board, Routing, RoutingMatch, RoutingRule, pick, rule_for
from domain.tasks import Task, TaskSpec, TaskTemplate, TemplateMatch, template_tasks
from domain.ticket import TicketState, decide, fold

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def folded(events: list, state: TicketState | None = None) -> TicketState:  # type: ignore[type-arg]
    out = fold(events, state)
    assert out is not None
    return out


def opened(severity: str = "critical") -> TicketState:
    state = fold(decide(OpenTicket(uuid.uuid4(), "o", 1, severity), None, T0))  # type: ignore[arg-type]
    assert state is not None
    return state


def test_templates_match_on_category_and_severity_and_give_stable_ids() -> None:
    templates = (
        TaskTemplate((TaskSpec("isolate", mandatory=True),), TemplateMatch("malware*", ("high", "critical"))),
        TaskTemplate((TaskSpec("conclude"),), TemplateMatch(severity="low")),
        TaskTemplate((TaskSpec("always"),)),
    )
    tid = uuid.uuid4()
    assert [t.title for t in template_tasks(templates, tid, "malware_x", "critical")] == ["isolate", "always"]
    assert [t.title for t in template_tasks(templates, tid, "malware_x", "low")] == ["conclude", "always"]
    assert [t.title for t in template_tasks(templates, tid, None, "high")] == ["always"]
    assert template_tasks(templates, tid, "malware_x", "critical") == template_tasks(
        templates, tid, "malware_x", "critical"
    )


def test_an_open_mandatory_task_blocks_resolve_close_and_auto_close() -> None:
    state = opened()
    task = Task(uuid.uuid4(), "isolate", mandatory=True)
    state = folded(decide(AddTask(state.ticket_id, task), state, T0), state)
    assert state is not None
    state = folded(
        decide(UpdateTicket(state.ticket_id, TicketChanges(status="in_progress")), state, T0), state
    )
    assert state is not None
    for target in ("resolved", "closed"):
        with pytest.raises(TaskOpen, match="isolate"):
            decide(UpdateTicket(state.ticket_id, TicketChanges(status=target)), state, T0)
    done = fold(decide(UpdateTask(state.ticket_id, task.task_id, TaskChanges(done=True)), state, T0), state)
    assert done is not None and done.tasks[task.task_id].done_at == T0
    resolved = fold(decide(UpdateTicket(state.ticket_id, TicketChanges(status="resolved")), done, T0), done)
    assert resolved is not None and resolved.status == "resolved"
    later = Task(uuid.uuid4(), "report", mandatory=True)
    pending = fold(decide(AddTask(state.ticket_id, later), resolved, T0), resolved)
    assert decide(AutoClose(state.ticket_id, 1), pending, T0 + timedelta(days=2)) == []
    assert (
        decide(UpdateTask(state.ticket_id, task.task_id, TaskChanges(done=True)), done, T0) == []
    )  # no change


def test_at_risk_once_at_the_share_and_never_after_a_breach() -> None:
    state = opened("critical")  # MTTA 15, MTTR 240
    sla = OrgConfig().sla_config
    check = CheckSla(state.ticket_id, sla, 80)
    assert decide(check, state, T0 + timedelta(minutes=11, seconds=59)) == []
    [risk] = decide(check, state, T0 + timedelta(minutes=12))
    assert isinstance(risk, SlaAtRisk) and (risk.kind, risk.percent, risk.at_risk_at) == (
        "mtta",
        80,
        T0 + timedelta(minutes=12),
    )
    state = folded([risk], state)
    assert state is not None and decide(check, state, T0 + timedelta(minutes=14)) == []
    [breach] = decide(check, state, T0 + timedelta(minutes=15))
    assert isinstance(breach, SlaBreached)
    # A scheduler that was away: both at once, the warning first.
    late = decide(check, opened("critical"), T0 + timedelta(minutes=20))
    assert [type(e).__name__ for e in late] == ["SlaAtRisk", "SlaBreached"]
    # Breached before at-risk existed: never found at risk afterwards (the MTTR clock still is).
    gone = fold(
        [SlaBreached(ts=T0, kind="mtta", deadline=T0, target_minutes=15, severity="critical")], opened()
    )
    assert gone is not None
    assert [(type(e).__name__, e.kind) for e in decide(check, gone, T0 + timedelta(hours=4))] == [  # type: ignore[union-attr]
        ("SlaAtRisk", "mttr"), ("SlaBreached", "mttr"),
    ]  # fmt: skip


def test_routing_picks_in_turn_least_loaded_and_skips_the_away() -> None:
    routing = Routing((
        RoutingRule(("a@x", "b@x", "c@x"), RoutingMatch(severity=("critical",))),
        RoutingRule(("d@x", "e@x"), RoutingMatch(escalation_group="tier2"), "least_loaded"),
    ))  # fmt: skip
    assert rule_for(routing, "critical", "c", None) == 0
    assert rule_for(routing, "low", "c", None) is None
    assert rule_for(routing, "low", "c", "tier2") == 1
    board = Board(away={"b@x": T0 + timedelta(hours=1), "c@x": T0 - timedelta(hours=1)})
    assert [pick(routing, 0, board, T0) for _ in range(4)] == ["a@x", "c@x", "a@x", "c@x"]
    board = Board(loads={"d@x": 3, "e@x": 1})
    assert [pick(routing, 1, board, T0) for _ in range(4)] == ["e@x", "e@x", "d@x", "e@x"]
    assert (
        pick(routing, 0, Board(away={a: T0 + timedelta(days=1) for a in ("a@x", "b@x", "c@x")}), T0) is None
    )


STEPS = (
    EscalationStep(after_minutes=5, notify=("soc",)),
    EscalationStep(after_minutes=15, notify=("soc",), escalate_to="tier2"),
)


def test_escalation_steps_fire_once_in_order_and_stop_on_acknowledgement() -> None:
    state = opened()
    assert decide(CheckEscalation(state.ticket_id, STEPS), state, T0 + timedelta(minutes=4, seconds=59)) == []
    first = decide(CheckEscalation(state.ticket_id, STEPS), state, T0 + timedelta(minutes=5))
    assert [(type(e), getattr(e, "step", None)) for e in first] == [(EscalationStepTaken, 1)]
    state = folded(first, state)
    assert decide(CheckEscalation(state.ticket_id, STEPS), state, T0 + timedelta(minutes=14)) == []
    second = decide(CheckEscalation(state.ticket_id, STEPS), state, T0 + timedelta(minutes=15))
    assert [type(e) for e in second] == [EscalationStepTaken, Escalated]
    state = folded(second, state)
    assert (state.escalation_steps, state.escalation_group, state.status) == (2, "tier2", "new")
    assert decide(CheckEscalation(state.ticket_id, STEPS), state, T0 + timedelta(hours=9)) == []
    # a scheduler that was down takes every step missed, in order, at once
    late = decide(CheckEscalation(state.ticket_id, STEPS), opened(), T0 + timedelta(hours=1))
    assert [getattr(e, "step", None) for e in late] == [1, 2, None]
    # acknowledged (or taken into work) before the first step: none
    for status in ("acknowledged", "in_progress"):
        fresh = opened()
        taken = folded(decide(UpdateTicket(fresh.ticket_id, TicketChanges(status=status)), fresh, T0), fresh)
        assert decide(CheckEscalation(taken.ticket_id, STEPS), taken, T0 + timedelta(hours=1)) == []


def test_escalation_policies_are_validated_naming_the_field() -> None:
    channels = {"channels": [{"name": "soc", "type": "email", "to": ["a@x"]}]}
    ok = apply_patch(OrgConfig(), {"notifications": channels, "escalation_policies": {"critical": [
        {"after_minutes": 5, "notify": ["soc"]}, {"after_minutes": 10, "escalate_to": "t2"}]}})  # fmt: skip
    assert ok.escalation_policies["critical"][1].escalate_to == "t2"
    bad = [
        ({"critical": [{"after_minutes": 5, "notify": ["nope"]}]}, "escalation_policies.critical[0].notify[0]"),
        ({"high": [{"after_minutes": 9, "notify": ["soc"]}, {"after_minutes": 9, "notify": ["soc"]}]},
         "escalation_policies.high[1].after_minutes"),
        ({"low": [{"after_minutes": 5}]}, "escalation_policies.low[0]"),
        ({"urgent": [{"after_minutes": 5, "notify": ["soc"]}]}, "escalation_policies"),
    ]  # fmt: skip
    for policies, field in bad:
        with pytest.raises(InvalidValue) as exc:
            apply_patch(OrgConfig(), {"notifications": channels, "escalation_policies": policies})
        assert exc.value.field == field, (policies, exc.value)
