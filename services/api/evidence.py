"""Entities (IOCs), telemetry references and artifacts of a ticket, and the cross-ticket IOC search."""

import contextlib
import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from aiohttp import web

from domain import events as ev
from domain.commands import (
    AddArtifact,
    AddEntity,
    AddTelemetry,
    EntityChanges,
    RemoveArtifact,
    RemoveEntity,
    RemoveTelemetry,
    TelemetryChanges,
    UpdateEntity,
    UpdateTelemetry,
)
from domain.errors import InvalidValue
from domain.evidence import (
    ENTITY_TYPES,
    Artifact,
    Entity,
    EntityType,
    Telemetry,
    Verdict,
    normalize_entity_value,
)
from domain.limits import TELEMETRY_EVENT_MAX, TEXT_MAX
from projections import ticket_queries as q
from services.api import params
from services.api.bodies import json_body
from services.api.databases import each_database, merged, pool_of
from services.api.dispatch import on_ticket
from services.api.errors import ApiError, invalid
from services.api.lookup import config_of, ticket_id_or_404
from services.api.responses import json_response
from services.api.schemas import ArtifactList, Deleted, EntityList, EntitySearch, TelemetryList
from services.eventstore import db

Short = Annotated[str, msgspec.Meta(max_length=1024)]
Long = Annotated[str, msgspec.Meta(max_length=TEXT_MAX)]
Name = Annotated[str, msgspec.Meta(max_length=256)]


def _uuid_path(request: web.Request, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise invalid(name, f"{name} must be a UUID") from None


def _deleted(**key: uuid.UUID) -> web.Response:
    return json_response(Deleted(deleted=True, **key))


# --- entities ------------------------------------------------------------------------------------


class EntityBody(msgspec.Struct, forbid_unknown_fields=True):
    entity_type: EntityType
    entity_value: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    name: Name | None = None
    verdict: Verdict = "unknown"
    context: Long | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None


async def list_entities(request: web.Request) -> web.Response:
    ticket_id = await ticket_id_or_404(request)
    async with pool_of(request).acquire() as conn:
        return json_response(EntityList(await q.list_entities(conn, ticket_id)))


async def add_entity(request: web.Request) -> web.Response:
    b = await json_body(request, EntityBody)
    entity = Entity(
        uuid.uuid4(), b.entity_type, b.entity_value, b.name, b.verdict, b.context, b.first_seen, b.last_seen
    )
    limit = (await config_of(request)).max_entities_per_ticket
    outcome = await on_ticket(request, lambda tid: AddEntity(tid, entity, limit))
    [event] = outcome.events
    assert isinstance(event, ev.EntityAdded)
    return json_response(event.entity, status=201)


async def update_entity(request: web.Request) -> web.Response:
    entity_id = _uuid_path(request, "entity_id")
    changes = await json_body(request, EntityChanges)
    outcome = await on_ticket(request, lambda tid: UpdateEntity(tid, entity_id, changes))
    [state] = outcome.states.values()
    return json_response(state.entities[entity_id])


async def remove_entity(request: web.Request) -> web.Response:
    entity_id = _uuid_path(request, "entity_id")
    await on_ticket(request, lambda tid: RemoveEntity(tid, entity_id))
    return _deleted(entity_id=entity_id)


def _search_values(entity_type: str | None, value: str) -> list[str]:
    """Stored values are normalised per type; without a type, try the spellings a type could give."""
    if entity_type:
        try:
            return [normalize_entity_value(entity_type, value)]
        except InvalidValue as exc:
            raise invalid("entity_value", str(exc)) from None
    candidates = {value.strip(), value.strip().lower()}
    for t in ("ip", "domain"):
        with contextlib.suppress(InvalidValue):
            candidates.add(normalize_entity_value(t, value))
    return sorted(candidates)


async def search_entities(request: web.Request) -> web.Response:
    oids = params.csv(request.query, "oids", required=True)
    types = params.csv(request.query, "entity_type", allowed=ENTITY_TYPES)
    entity_type = types[0] if types else None
    value = params.text(request.query, "entity_value", required=True, max_length=2048)
    assert value is not None
    candidates = _search_values(entity_type, value)

    async def share(conn: db.Connection, there: list[str]) -> list[list[tuple[datetime, q.EntityMatch]]]:
        return [await q.search_entities(conn, there, entity_type, c) for c in candidates]

    parts = await each_database(request, oids, share)
    matches: list[q.EntityMatch] = []
    for i in range(len(candidates)):  # each candidate's matches, newest first across the databases
        found = merged([part[i] for part in parts], lambda m: m[0], reverse=True)[: q.SEARCH_LIMIT]
        matches += [match for _, match in found]
    return json_response(EntitySearch(matches))


# --- telemetry -----------------------------------------------------------------------------------


class TelemetryBody(msgspec.Struct, forbid_unknown_fields=True):
    """Either `{"event": {full LimaCharlie event}, ...}` or the flat `{atom, sid, event_type, ...}`."""

    event: dict[str, Any] | None = None
    atom: Short | None = None
    sid: Short | None = None
    event_type: Short | None = None
    event_summary: Long | None = None
    verdict: Verdict | None = None
    relevance: Long | None = None


def _from_event(event: dict[str, Any]) -> tuple[str, str, str | None]:
    routing = event.get("routing")
    if not isinstance(routing, dict):
        raise invalid("event.routing", "a LimaCharlie event has a routing object")
    atom, sid, event_type = routing.get("this"), routing.get("sid"), routing.get("event_type")
    if not isinstance(atom, str) or not atom:
        raise invalid("event.routing.this", "the event has no atom (routing.this)")
    if not isinstance(sid, str) or not sid:
        raise invalid("event.routing.sid", "the event has no sensor id (routing.sid)")
    if len(atom) > 1024 or len(sid) > 1024:
        raise invalid("event.routing", "atom and sid have at most 1024 characters")
    return atom, sid, event_type if isinstance(event_type, str) else None


async def list_telemetry(request: web.Request) -> web.Response:
    ticket_id = await ticket_id_or_404(request)
    async with pool_of(request).acquire() as conn:
        return json_response(TelemetryList(await q.list_telemetry(conn, ticket_id)))


async def add_telemetry(request: web.Request) -> web.Response:
    b = await json_body(request, TelemetryBody)
    if b.event is not None:
        atom, sid, event_type = _from_event(b.event)
    elif b.atom and b.sid:
        atom, sid, event_type = b.atom, b.sid, b.event_type
    else:
        raise invalid("atom" if not b.atom else "sid", "give atom and sid (flat form) or an event object")
    if b.event is not None and len(msgspec.json.encode(b.event)) > TELEMETRY_EVENT_MAX:
        raise ApiError(
            413, f"the event is over {TELEMETRY_EVENT_MAX} bytes of JSON, the most kept", field="event"
        )
    telemetry = Telemetry(
        uuid.uuid4(), atom, sid, event_type, b.event_summary, b.verdict, b.relevance, event=b.event
    )
    outcome = await on_ticket(request, lambda tid: AddTelemetry(tid, telemetry))
    [event] = outcome.events
    assert isinstance(event, ev.TelemetryAdded)
    return json_response(event.telemetry, status=201)


async def update_telemetry(request: web.Request) -> web.Response:
    telemetry_id = _uuid_path(request, "telemetry_id")
    changes = await json_body(request, TelemetryChanges)
    outcome = await on_ticket(request, lambda tid: UpdateTelemetry(tid, telemetry_id, changes))
    [state] = outcome.states.values()
    return json_response(state.telemetry[telemetry_id])


async def remove_telemetry(request: web.Request) -> web.Response:
    telemetry_id = _uuid_path(request, "telemetry_id")
    await on_ticket(request, lambda tid: RemoveTelemetry(tid, telemetry_id))
    return _deleted(telemetry_id=telemetry_id)


# --- artifacts -----------------------------------------------------------------------------------


class ArtifactBody(msgspec.Struct, forbid_unknown_fields=True):
    artifact_type: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    description: Long | None = None
    verdict: Verdict | None = None
    url: Short | None = None
    path: Short | None = None
    hash: Annotated[str, msgspec.Meta(max_length=256)] | None = None


async def list_artifacts(request: web.Request) -> web.Response:
    ticket_id = await ticket_id_or_404(request)
    async with pool_of(request).acquire() as conn:
        return json_response(ArtifactList(await q.list_artifacts(conn, ticket_id)))


async def add_artifact(request: web.Request) -> web.Response:
    b = await json_body(request, ArtifactBody)
    artifact = Artifact(uuid.uuid4(), b.artifact_type, b.description, b.verdict, b.url, b.path, b.hash)
    limit = (await config_of(request)).max_artifacts_per_ticket
    outcome = await on_ticket(request, lambda tid: AddArtifact(tid, artifact, limit))
    [event] = outcome.events
    assert isinstance(event, ev.ArtifactAdded)
    return json_response(event.artifact, status=201)


async def remove_artifact(request: web.Request) -> web.Response:
    artifact_id = _uuid_path(request, "artifact_id")
    await on_ticket(request, lambda tid: RemoveArtifact(tid, artifact_id))
    return _deleted(artifact_id=artifact_id)
