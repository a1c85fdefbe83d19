"""The command handler: the only code that appends ticket events. Shared by the intake, the API and
the scheduler.

It loads the streams a batch of commands touches (repository), asks the domain to decide, keeps the
write-side indexes and appends, all in the caller's transaction (unit_of_work), so a retry after
any failure starts from a clean slate.
"""

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID

import msgspec

from domain.commands import TicketChanges, TicketCommand, UpdateTicket
from domain.errors import TicketNotFound
from domain.events import Assigned, Escalated, TicketEvent
from domain.intake import severity_of
from domain.routing import ROUTING_ACTOR, route
from domain.ticket import TicketState, UnreadCommand, decide, decide_unread, evolve, plan_merge, plan_split
from services.commands.configs import load_configs
from services.commands.envelope import CommandContext, envelope
from services.commands.indexes import IndexChanges, allocate_ticket_numbers
from services.commands.repository import load_states
from services.commands.routing import load_boards, save_turns
from services.commands.state_cache import StateCache
from services.commands.unit_of_work import lock_tickets, retrying
from services.eventstore import db
from services.eventstore import postgres as store

Clock = Callable[[], datetime]


class Outcome(msgspec.Struct):
    states: dict[UUID, TicketState]
    events: list[TicketEvent]


class CommandHandler:
    def __init__(self, clock: Clock, cache: StateCache | None = None) -> None:
        self.clock = clock
        self.cache = StateCache() if cache is None else cache

    async def execute(
        self, conn: db.Connection, commands: Sequence[tuple[TicketCommand, CommandContext]]
    ) -> Outcome:
        """Decide and append every command in the caller's transaction; return states and new events.

        Raises DomainError subclasses (nothing is written then) and ConcurrencyError (retry). A
        stream that only UnreadCommands name and the cache does not hold is not read: its head is
        enough to append to it (decide_unread).
        """
        read = {c.ticket_id for c, _ in commands if not isinstance(c, UnreadCommand)}
        unread = {c.ticket_id for c, _ in commands} - read
        unread -= {sid for sid in unread if self.cache.get(sid) is not None}
        states = await load_states(
            conn, [sid for c, _ in commands if (sid := c.ticket_id) not in unread], self.cache
        )
        return await self._run(conn, states, commands, await store.read_heads(conn, list(unread)))

    async def merge(
        self, conn: db.Connection, target: UUID, sources: Sequence[UUID], ctx: CommandContext
    ) -> Outcome:
        """Sources become merged into the target, which inherits their detections: one transaction."""
        states = await load_states(conn, [target, *sources], self.cache)
        missing = [sid for sid in [target, *sources] if sid not in states]
        if missing:
            raise TicketNotFound(f"tickets {missing} do not exist")
        commands = plan_merge(states[target], [states[s] for s in sources])
        return await self._run(conn, states, [(c, ctx) for c in commands], {})

    async def split(
        self,
        conn: db.Connection,
        source: UUID,
        detection_ids: tuple[str, ...],
        new_ticket_id: UUID,
        ctx: CommandContext,
    ) -> Outcome:
        """Detections of a ticket move to a new one, numbered here: one transaction."""
        states = await load_states(conn, [source], self.cache)
        state = states.get(source)
        if state is None:
            raise TicketNotFound(f"ticket {source} does not exist")
        held = [state.detections[i] for i in detection_ids if i in state.detections]
        config = (await load_configs(conn, [state.oid]))[state.oid]
        severity = severity_of(held, config) if held else state.severity  # none held: SplitOff refuses
        [number] = (await allocate_ticket_numbers(conn, Counter({state.oid: 1})))[state.oid]
        commands = plan_split(state, detection_ids, new_ticket_id, number, severity)
        return await self._run(conn, states, [(c, ctx) for c in commands], {})

    async def _run(
        self,
        conn: db.Connection,
        states: dict[UUID, TicketState],
        commands: Sequence[tuple[TicketCommand, CommandContext]],
        heads: dict[UUID, store.StreamHead],
    ) -> Outcome:
        loaded_versions = {sid: s.version for sid, s in states.items()}
        loaded_versions.update((sid, h.version) for sid, h in heads.items())
        pending: dict[UUID, list[store.NewEvent]] = {}
        decided: list[TicketEvent] = []
        escalated: dict[UUID, CommandContext] = {}  # tickets escalated to a group, by whom
        index = IndexChanges()
        now = self.clock()
        for command, ctx in commands:
            sid = command.ticket_id
            head = heads.get(sid)
            if head is not None:  # appended to unread: no state to evolve, nor to cache
                assert isinstance(command, UnreadCommand)
                for event in decide_unread(command, now):
                    meta = head.metadata
                    pending.setdefault(sid, []).append(
                        envelope(event, ctx, meta["oid"], meta["ticket_number"])
                    )
                    decided.append(event)
                continue
            state = states.get(sid)
            made = decide(command, state, now)
            for event in made:
                state = evolve(state, event)
                pending.setdefault(sid, []).append(envelope(event, ctx, state.oid, state.ticket_number))
                decided.append(event)
                index.add(event, state, ctx.read_at)
            if any(isinstance(e, Escalated) and e.escalation_group for e in made) and not any(
                isinstance(e, Assigned) for e in made
            ):
                escalated[sid] = ctx  # to a group, with no assignee named: routing may pick one
            if state is not None:
                states[sid] = state
        await self._route_escalations(conn, states, escalated, pending, decided, index, now)
        for sid, events in pending.items():  # checked on use: harmless if this append never commits
            if sid not in heads:
                self.cache.put(states[sid], events[-1].event_id)
        await index.write(conn)
        await store.append(
            conn,
            [store.StreamAppend(sid, loaded_versions.get(sid, 0), events) for sid, events in pending.items()],
        )
        return Outcome(states, decided)

    async def _route_escalations(
        self,
        conn: db.Connection,
        states: dict[UUID, TicketState],
        escalated: dict[UUID, CommandContext],
        pending: dict[UUID, list[store.NewEvent]],
        decided: list[TicketEvent],
        index: IndexChanges,
        now: datetime,
    ) -> None:
        """A ticket escalated to a group that a routing rule names goes to one of its analysts, in
        the escalation's own transaction (`assigned` by system:routing)."""
        if not escalated:
            return
        oids = {states[sid].oid for sid in escalated}
        configs = await load_configs(conn, oids)
        boards = await load_boards(conn, configs, oids)
        before = {oid: dict(b.turns) for oid, b in boards.items()}
        for sid, ctx in escalated.items():
            state = states[sid]
            board = boards.get(state.oid)
            category = state.first_detection.detection_cat if state.first_detection else None
            routing = configs[state.oid].routing
            analyst = (
                route(routing, board, state.severity, category, state.escalation_group, now)
                if board
                else None
            )
            if analyst is None or analyst == state.assignee:
                continue
            routed = msgspec.structs.replace(ctx, actor=ROUTING_ACTOR)
            for event in decide(UpdateTicket(sid, TicketChanges(assignee=analyst)), state, now):
                state = evolve(state, event)
                pending[sid].append(envelope(event, routed, state.oid, state.ticket_number))
                decided.append(event)
                index.add(event, state, None)
            states[sid] = state
        await save_turns(conn, before, boards)


async def execute_together(
    pool: db.Pool, handler: CommandHandler, commands: Sequence[TicketCommand], ctx: CommandContext
) -> Outcome:
    """Commands in one transaction, their tickets locked for it; retried from a fresh read when a
    concurrent writer got there first."""

    async def work(conn: db.Connection) -> Outcome:
        await lock_tickets(conn, [c.ticket_id for c in commands])
        return await handler.execute(conn, [(c, ctx) for c in commands])

    return await retrying(pool, work)


async def execute_one(
    pool: db.Pool, handler: CommandHandler, command: TicketCommand, ctx: CommandContext
) -> Outcome:
    return await execute_together(pool, handler, [command], ctx)
