"""Routing: who a ticket goes to when it opens without an assignee, or is escalated to a group.

An org's `routing.rules` are tried in order and the first that matches picks an analyst: in turn
(`round_robin`, from where the rule's last pick left off) or the one with the fewest open tickets
assigned (`least_loaded`, ties to the one listed first). An analyst away until later is skipped.
A rule naming an `escalation_group` routes escalations to that group; one that names none routes
new tickets.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from domain.rules import Glob, ticket_matches
from domain.severity import Severity

Analyst = Annotated[str, msgspec.Meta(min_length=3, max_length=256, pattern=r"^[^@\s]+@[^@\s]+$")]
Mode = Literal["round_robin", "least_loaded"]
ROUTING_ACTOR = "system:routing"


class RoutingMatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    severity: tuple[Severity, ...] = ()  # any when empty
    category: Glob = "*"
    escalation_group: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None


class RoutingRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    analysts: Annotated[tuple[Analyst, ...], msgspec.Meta(min_length=1, max_length=500)]
    match: RoutingMatch = RoutingMatch()
    mode: Mode = "round_robin"


class Routing(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    rules: Annotated[tuple[RoutingRule, ...], msgspec.Meta(max_length=100)] = ()


class Board(msgspec.Struct):
    """What routing decides from, for one org: where each rule's turn stands, how many open tickets
    each analyst holds, and who is away until when. Kept up to date as a batch assigns."""

    turns: dict[int, int] = {}  # rule index -> the index of the analyst it picked last
    loads: dict[str, int] = {}  # analyst -> open tickets assigned
    away: dict[str, datetime] = {}  # analyst -> away until


def rule_for(
    routing: Routing, severity: Severity, category: str | None, escalation_group: str | None
) -> int | None:
    """The index of the first rule for this ticket: an opening (no group) or an escalation to a group."""
    for i, rule in enumerate(routing.rules):
        m = rule.match
        if m.escalation_group == escalation_group and ticket_matches(
            m.category, m.severity, category, severity
        ):
            return i
    return None


def pick(routing: Routing, index: int, board: Board, now: datetime) -> str | None:
    """The analyst rule `index` gives the next ticket to (the board is moved on), or None when every
    analyst it names is away."""
    rule = routing.rules[index]
    present = [(i, a) for i, a in enumerate(rule.analysts) if board.away.get(a, now) <= now]
    if not present:
        return None
    if rule.mode == "least_loaded":
        i, analyst = min(present, key=lambda p: (board.loads.get(p[1], 0), p[0]))
    else:
        last = board.turns.get(index, -1)
        i, analyst = next(((i, a) for i, a in present if i > last), present[0])
    board.turns[index] = i
    board.loads[analyst] = board.loads.get(analyst, 0) + 1
    return analyst


def route(
    routing: Routing,
    board: Board,
    severity: Severity,
    category: str | None,
    escalation_group: str | None,
    now: datetime,
) -> str | None:
    """The analyst the first matching rule gives this ticket (an opening, or an escalation to a
    group), or None: no rule matches, or all its analysts are away."""
    index = rule_for(routing, severity, category, escalation_group)
    return pick(routing, index, board, now) if index is not None else None


def analysts_of(routing: Routing) -> Sequence[str]:
    return sorted({a for rule in routing.rules for a in rule.analysts})


def assign_openings(
    openings: Sequence[tuple[int, str, Severity, str | None]],
    routings: dict[str, Routing],
    boards: dict[str, Board],
    now: datetime,
) -> list[tuple[int, str]]:
    """(position, analyst) for each new ticket (position, org, severity, category) that a rule of
    its org routes, in order; the boards move on as they are handed out."""
    out = []
    for at, oid, severity, category in openings:
        routing, board = routings.get(oid), boards.get(oid)
        if routing is None or board is None:
            continue
        analyst = route(routing, board, severity, category, None, now)
        if analyst is not None:
            out.append((at, analyst))
    return out
