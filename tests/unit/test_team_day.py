"""Task templates, mandatory tasks, SLA at risk and routing picks, pure."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain.commands import (
    AddTask,
    AutoClose,
    CheckSla,
    OpenTicket,
    TaskChanges,
    TicketChanges,
    UpdateTask,
    UpdateTicket,
)
from domain.config import OrgConfig
from domain.errors import TaskOpen
from domain.events import SlaAtRisk, SlaBreached
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
