"""Dashboard counts, the summary report and the archive (investigation.get)."""

import logging
from datetime import datetime, timedelta

import msgspec
from aiohttp import web

from domain.limits import EARLIEST_TIME, LATEST_TIME
from projections import reports as r
from projections import rule_report, task_report
from services.api import params
from services.api.context import HANDLER, POOL
from services.api.errors import invalid, json_error, not_found
from services.api.lookup import oid_of
from services.api.responses import json_response
from services.archive import files as archive
from services.commands.configs import load_configs

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
    async with request.app[POOL].acquire() as conn:
        configs = await load_configs(conn, oids)
        counts = await r.dashboard_counts(conn, configs, request.app[HANDLER].clock())
    return json_response(counts)


async def summary_report(request: web.Request) -> web.Response:
    oids = params.csv(request.query, "oids", required=True)
    now = request.app[HANDLER].clock()
    period_from, period_to = _period(request, now)
    if period_from <= now < period_to:  # "until far in the future": what exists is until now
        period_to = now
    group_by = _group_by(request)
    async with request.app[POOL].acquire() as conn:
        configs = await load_configs(conn, oids)
        report = await r.summary(conn, configs, period_from, period_to, group_by, now)  # type: ignore[arg-type]
    return json_response(report)


async def trend_report(request: web.Request) -> web.Response:
    oids = params.csv(request.query, "oids", required=True)
    now = request.app[HANDLER].clock()
    period_from, period_to = _period(request, now, default_days=90)
    interval = params.choice(request.query, "interval", ("day", "week"), "day")
    group_by = _group_by(request)
    if len(r.bucket_starts(period_from, period_to, interval)) > r.TREND_BUCKETS_MAX:  # type: ignore[arg-type]
        raise invalid("from", f"at most {r.TREND_BUCKETS_MAX} buckets: a shorter period or interval=week")
    async with request.app[POOL].acquire() as conn:
        configs = await load_configs(conn, oids)
        report = await r.trend(conn, configs, period_from, period_to, interval, group_by, now)  # type: ignore[arg-type]
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
    async with request.app[POOL].acquire() as conn:
        configs = await load_configs(conn, oids)
        report = await rule_report.rule_report(conn, configs, period_from, period_to)
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
    async with request.app[POOL].acquire() as conn:
        return json_response(await task_report.task_report(conn, oids, period_from, period_to))


async def list_archive(request: web.Request) -> web.Response:
    oids = params.csv(request.query, "oids", required=True)
    limit = params.integer(request.query, "limit", default=200, low=1, high=1000)
    async with request.app[POOL].acquire() as conn:
        return json_response(ArchiveList(await archive.list_archive(conn, oids, limit)))


async def get_archived(request: web.Request) -> web.Response:
    """The archived ticket's own export: its state, evidence and full event history."""
    oid = oid_of(request)
    number = params.ticket_number(request.match_info["number"])
    async with request.app[POOL].acquire() as conn:
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
