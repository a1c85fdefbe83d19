"""Dashboard counts, the summary report and the archive (investigation.get)."""

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec
from aiohttp import web

from domain.config import OrgConfig
from domain.limits import EARLIEST_TIME, LATEST_TIME
from projections import reports as r
from projections import rule_report, task_report
from services.api import params
from services.api.context import HANDLER
from services.api.databases import each_database, merged, pool_of, spans_databases
from services.api.errors import invalid, json_error, not_found
from services.api.lookup import oid_of
from services.api.responses import json_response
from services.archive import files as archive
from services.commands.configs import load_configs
from services.eventstore import db

log = logging.getLogger(__name__)

# The latest moment a report reads: the store holds no time past it (limits.LATEST_TIME excluded).
LAST_MOMENT = LATEST_TIME - timedelta(microseconds=1)


def _time(request: web.Request, name: str) -> datetime | None:
    raw = params.text(request.query, name, max_length=64)
    if raw is None:
        return None
    try:
        value = msgspec.convert(raw, datetime)
    except msgspec.ValidationError:
        raise invalid(name, f"{name} must be an RFC 3339 timestamp with a time zone") from None
    if value.tzinfo is None:
        raise invalid(name, f"{name} must carry a time zone (e.g. Z)")
    # Outside what can be stored, clamped: nothing exists there to report on. Compared, never
    # converted: 0001-01-01T00:00+14:00 is in year 0 in UTC, which a datetime cannot hold.
    return min(max(value, EARLIEST_TIME), LAST_MOMENT)


async def dashboard_counts(request: web.Request) -> web.Response:
    oids = params.csv(request.query, "oids", required=True)
    now = request.app[HANDLER].clock()

    async def share(conn: db.Connection, there: list[str]) -> r.DashboardCounts:
        return await r.dashboard_counts(conn, await load_configs(conn, there), now)

    return json_response(r.merged_counts(await each_database(request, oids, share)))


async def summary_report(request: web.Request) -> web.Response:
    oids = params.csv(request.query, "oids", required=True)
    now = request.app[HANDLER].clock()
    period_from, period_to = _period(request, now)
    if period_from <= now < period_to:  # "until far in the future": what exists is until now
        period_to = now
    group_by: Any = _group_by(request)
    every = spans_databases(request, oids)  # the figures over all orgs are merged from their durations
    configs: dict[str, OrgConfig] = {}

    async def share(conn: db.Connection, there: list[str]) -> Sequence[r.Row]:
        configs.update(theirs := await load_configs(conn, there))
        return await r.summary_rows(conn, theirs, period_from, period_to, group_by, now, every)

    shares = await each_database(request, oids, share)
    ordered = {oid: configs[oid] for oid in oids if oid in configs}  # the orgs in the request's order
    return json_response(r.summary_of(ordered, period_from, period_to, group_by, shares))


async def trend_report(request: web.Request) -> web.Response:
    oids = params.csv(request.query, "oids", required=True)
    now = request.app[HANDLER].clock()
    period_from, period_to = _period(request, now, default_days=90)
    interval: Any = params.choice(request.query, "interval", ("day", "week"), "day")
    group_by: Any = _group_by(request)
    if len(r.bucket_starts(period_from, period_to, interval)) > r.TREND_BUCKETS_MAX:
        raise invalid("from", f"at most {r.TREND_BUCKETS_MAX} buckets: a shorter period or interval=week")
    every = spans_databases(request, oids)

    async def share(conn: db.Connection, there: list[str]) -> tuple[Sequence[r.Row], Sequence[r.Row]]:
        configs = await load_configs(conn, there)
        return await r.trend_rows(conn, configs, period_from, period_to, interval, group_by, now, every)

    shares = await each_database(request, oids, share)
    report = r.trend_of(period_from, period_to, interval, group_by, shares)
    if params.choice(request.query, "format", ("json", "csv"), "json") == "csv":
        return web.Response(
            text=r.trend_csv(report),
            content_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="trend.csv"'},
        )
    return json_response(report)


def _group_by(request: web.Request) -> str | None:
    group_by = request.query.get("group_by") or None
    if group_by is not None and group_by not in r.GROUP_EXPR:
        raise invalid("group_by", f"group_by must be one of {', '.join(r.GROUP_EXPR)}")
    return group_by


def _period(request: web.Request, now: datetime, default_days: int = 30) -> tuple[datetime, datetime]:
    period_to = _time(request, "to") or now
    period_from = _time(request, "from") or max(period_to - timedelta(days=default_days), EARLIEST_TIME)
    if period_from >= period_to:
        raise invalid("from", "from must be earlier than to")
    return period_from, period_to


async def rules_report(request: web.Request) -> web.Response:
    """Per detection rule (category and source): volume, grouping, suppression, verdicts, MTTR and
    whether it needs tuning; `format=csv` for a spreadsheet."""
    oids = params.csv(request.query, "oids", required=True)
    fmt = params.choice(request.query, "format", ("json", "csv"), "json")
    period_from, period_to = _period(request, request.app[HANDLER].clock())

    async def share(conn: db.Connection, there: list[str]) -> rule_report.RuleReport:
        return await rule_report.rule_report(conn, await load_configs(conn, there), period_from, period_to)

    parts = await each_database(request, oids, share)  # each rule's row is one org's, from its database
    rules = merged([part.rules for part in parts], rule_report.order)
    report = rule_report.RuleReport(period_from, period_to, rules)
    if fmt == "csv":
        name = f"rules-{period_from:%Y%m%d}-{period_to:%Y%m%d}.csv"
        return web.Response(
            text=rule_report.as_csv(report),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return json_response(report)


async def tasks_report(request: web.Request) -> web.Response:
    """Per task title: completed in the period, the median time to complete, and still open."""
    oids = params.csv(request.query, "oids", required=True)
    period_from, period_to = _period(request, request.app[HANDLER].clock())

    async def share(conn: db.Connection, there: list[str]) -> task_report.TaskReport:
        return await task_report.task_report(conn, there, period_from, period_to)

    parts = await each_database(request, oids, share)
    tasks = merged([part.tasks for part in parts], task_report.order)
    return json_response(task_report.TaskReport(period_from, period_to, tasks))


async def list_archive(request: web.Request) -> web.Response:
    oids = params.csv(request.query, "oids", required=True)
    limit = params.integer(request.query, "limit", default=200, low=1, high=1000)

    async def share(conn: db.Connection, there: list[str]) -> list[archive.ArchiveEntry]:
        return await archive.list_archive(conn, there, limit)

    parts = await each_database(request, oids, share)
    entries = merged(parts, lambda e: (e.archived_at, e.ticket_number), reverse=True)
    return json_response(ArchiveList(entries[:limit]))


async def get_archived(request: web.Request) -> web.Response:
    """The archived ticket's own export: its state, evidence and full event history."""
    oid = oid_of(request)
    number = params.ticket_number(request.match_info["number"])
    async with pool_of(request).acquire() as conn:
        try:
            document = await archive.read_archive(conn, oid, number)
        except archive.ArchivePurged as exc:
            return json_error(410, str(exc))
        except (archive.ArchiveDamaged, OSError) as exc:
            log.error("archive of %s/%d unreadable: %s", oid, number, exc)
            return json_error(503, "the archived ticket cannot be read right now")
    if document is None:
        raise not_found(f"ticket {number} is not archived")
    return json_response(document)


class ArchiveList(msgspec.Struct):
    tickets: list[archive.ArchiveEntry]
