"""Dashboard counts and the summary report, computed in SQL over the tickets read model.

Definitions (also in the README):
- The MTTA clock runs from `created_at` to the first acknowledgement (`acknowledged_at`); the MTTR
  clock from `created_at` to the first resolution (`resolved_at`, kept across reopens).
- Targets are the org's configured minutes for the ticket's current severity.
- SLA compliance counts tickets whose clock stopped within target, over the tickets whose clock
  stopped or whose deadline has passed: still open at report time, or closed/merged without the
  milestone after the deadline. Tickets closed/merged without it before the deadline are left out.
- Times are in seconds; percentiles interpolate linearly (PostgreSQL's percentile_cont).
"""

import csv
import heapq
import io
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, NamedTuple, TypeAlias

import asyncpg
import msgspec

from domain.config import OrgConfig
from domain.lifecycle import OPEN
from services.eventstore import db

# A row of figures: as a database gives it, or combined from several databases' (`combined`).
Row: TypeAlias = asyncpg.Record | Mapping[str, Any]
GroupBy = Literal["severity", "category", "assignee", "sensor", "day"]
GROUP_EXPR: dict[str, str] = {
    "severity": "t.severity",
    "category": "t.detection_cat",
    "assignee": "t.assignee",
    "sensor": "t.sensor_id",
    "day": "to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}
# The open statuses as an SQL literal list: with a literal the planner can use the partial index on
# open tickets (tickets_sla_open); with a parameter it could not prove the index applies.
OPEN_SQL = "(" + ", ".join(f"'{s}'" for s in sorted(OPEN)) + ")"


class SlaTargets(NamedTuple):
    """Each (org, severity)'s targets as parallel arrays for an unnest() join."""

    oids: list[str]
    severities: list[str]
    mtta: list[int]  # minutes
    mttr: list[int]
    at_risk_percent: list[int]  # the org's sla_at_risk_percent


def sla_targets(configs: dict[str, OrgConfig]) -> SlaTargets:
    out = SlaTargets([], [], [], [], [])
    for oid, config in configs.items():
        for severity, target in config.sla_config.items():
            out.oids.append(oid)
            out.severities.append(severity)
            out.mtta.append(target.mtta_minutes)
            out.mttr.append(target.mttr_minutes)
            out.at_risk_percent.append(config.sla_at_risk_percent)
    return out


class SlaCounts(msgspec.Struct):
    mtta: int = 0
    mttr: int = 0


class Counts(msgspec.Struct):
    total: int = 0
    by_status: dict[str, int] = msgspec.field(default_factory=dict)
    by_severity: dict[str, int] = msgspec.field(default_factory=dict)
    sla_breaches: SlaCounts = msgspec.field(default_factory=SlaCounts)
    # open tickets whose running clock used the org's sla_at_risk_percent of its budget, not yet breached
    sla_at_risk: SlaCounts = msgspec.field(default_factory=SlaCounts)


class DashboardCounts(msgspec.Struct):
    orgs: dict[str, Counts]
    total: Counts


# Counts come from ticket_counts (kept by triggers). An SLA clock is breached when its ticket is
# open, the milestone is missing and the target has passed; the open tickets without the milestone
# are counted in ticket_counts, so only the clocks still running (created within the target) are
# counted from the index: the cost follows the recent tickets, not the backlog of breached ones.
# A running clock is at risk once it has used the org's share of its budget (`pct`, migration 0029):
# counted from the same index, among the running ones.
_DASHBOARD = f"""
SELECT oid, status, severity, acknowledged, resolved, n,
    NULL::bigint AS ack_running, NULL::bigint AS res_running,
    NULL::bigint AS ack_risk, NULL::bigint AS res_risk
FROM ticket_counts WHERE oid = ANY($1::text[]) AND n <> 0
UNION ALL
SELECT c.oid, NULL, c.severity, NULL, NULL, NULL,
    (SELECT count(*) FROM tickets t
     WHERE t.oid = c.oid AND t.severity = c.severity AND t.status IN {OPEN_SQL}
        AND t.acknowledged_at IS NULL AND t.created_at > ticketing_sla_started_by($6::timestamptz, c.mtta)),
    (SELECT count(*) FROM tickets t
     WHERE t.oid = c.oid AND t.severity = c.severity AND t.status IN {OPEN_SQL}
        AND t.resolved_at IS NULL AND t.created_at > ticketing_sla_started_by($6::timestamptz, c.mttr)),
    (SELECT count(*) FROM tickets t
     WHERE t.oid = c.oid AND t.severity = c.severity AND t.status IN {OPEN_SQL}
        AND t.acknowledged_at IS NULL AND t.created_at > ticketing_sla_started_by($6::timestamptz, c.mtta)
        AND t.created_at <= ticketing_sla_at_risk_by($6::timestamptz, c.mtta, c.pct)),
    (SELECT count(*) FROM tickets t
     WHERE t.oid = c.oid AND t.severity = c.severity AND t.status IN {OPEN_SQL}
        AND t.resolved_at IS NULL AND t.created_at > ticketing_sla_started_by($6::timestamptz, c.mttr)
        AND t.created_at <= ticketing_sla_at_risk_by($6::timestamptz, c.mttr, c.pct))
FROM unnest($2::text[], $3::text[], $4::int[], $5::int[], $7::int[]) AS c(oid, severity, mtta, mttr, pct)
"""


async def dashboard_counts(
    conn: db.Connection, configs: dict[str, OrgConfig], now: datetime
) -> DashboardCounts:
    orgs = {oid: Counts() for oid in configs}
    total = Counts()
    unacked: dict[tuple[str, str], int] = {}  # open tickets without the milestone, by (oid, severity)
    unresolved: dict[tuple[str, str], int] = {}
    running: list[asyncpg.Record] = []
    t = sla_targets(configs)
    for r in await conn.fetch(
        _DASHBOARD, list(configs), t.oids, t.severities, t.mtta, t.mttr, now, t.at_risk_percent
    ):
        if r["status"] is None:
            running.append(r)
            continue
        oid, st, sev, n = r["oid"], r["status"], r["severity"], r["n"]
        for c in (orgs[oid], total):
            c.total += n
            c.by_status[st] = c.by_status.get(st, 0) + n
            c.by_severity[sev] = c.by_severity.get(sev, 0) + n
        if st in OPEN:
            if not r["acknowledged"]:
                unacked[oid, sev] = unacked.get((oid, sev), 0) + n
            if not r["resolved"]:
                unresolved[oid, sev] = unresolved.get((oid, sev), 0) + n
    for r in running:
        key = (r["oid"], r["severity"])
        for c in (orgs[r["oid"]], total):
            c.sla_breaches.mtta += unacked.get(key, 0) - r["ack_running"]
            c.sla_breaches.mttr += unresolved.get(key, 0) - r["res_running"]
            c.sla_at_risk.mtta += r["ack_risk"]
            c.sla_at_risk.mttr += r["res_risk"]
    return DashboardCounts(orgs, total)


def merged_counts(parts: list[DashboardCounts]) -> DashboardCounts:
    """The counts of orgs on several databases: each org's as its database gave them, the totals
    added up."""
    if len(parts) == 1:
        return parts[0]
    total = Counts()
    for part in parts:
        t = part.total
        total.total += t.total
        for mine, theirs in ((total.by_status, t.by_status), (total.by_severity, t.by_severity)):
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n
        for clocks, more in ((total.sla_breaches, t.sla_breaches), (total.sla_at_risk, t.sla_at_risk)):
            clocks.mtta += more.mtta
            clocks.mttr += more.mttr
    return DashboardCounts({oid: c for part in parts for oid, c in part.orgs.items()}, total)


class TimeStats(msgspec.Struct):
    count: int
    mean_s: float | None
    median_s: float | None
    p90_s: float | None
    sla_compliance_pct: float | None  # within target, over stopped or overdue clocks
    within_target: int
    measured: int


class Metrics(msgspec.Struct):
    total: int
    true_positives: int
    false_positives: int
    pending: int
    true_positive_rate_pct: float | None  # over classified tickets
    false_positive_rate_pct: float | None
    escalated: int
    escalation_rate_pct: float | None
    mtta: TimeStats
    mttr: TimeStats
    groups: dict[str, "Metrics"] | None = None


class SummaryReport(msgspec.Struct):
    period_from: datetime
    period_to: datetime
    group_by: str | None
    orgs: dict[str, Metrics]
    aggregate: Metrics


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 4) if whole else None


def _empty() -> Metrics:
    none = TimeStats(0, None, None, None, None, 0, 0)
    return Metrics(0, 0, 0, 0, None, None, 0, None, none, none)


def _metrics(r: Row) -> Metrics:
    classified = r["tp"] + r["fp"]

    def stats(prefix: str) -> TimeStats:
        return TimeStats(
            count=r[f"{prefix}_n"],
            mean_s=r[f"{prefix}_mean"],
            median_s=r[f"{prefix}_median"],
            p90_s=r[f"{prefix}_p90"],
            sla_compliance_pct=_pct(r[f"{prefix}_in"], r[f"{prefix}_den"]),
            within_target=r[f"{prefix}_in"],
            measured=r[f"{prefix}_den"],
        )

    return Metrics(
        total=r["total"],
        true_positives=r["tp"],
        false_positives=r["fp"],
        pending=r["pending"],
        true_positive_rate_pct=_pct(r["tp"], classified),
        false_positive_rate_pct=_pct(r["fp"], classified),
        escalated=r["escalated"],
        escalation_rate_pct=_pct(r["escalated"], r["total"]),
        mtta=stats("tta"),
        mttr=stats("ttr"),
    )


def _measured(grp: str, bucket: str) -> str:
    """The period's tickets ($5 to $6, orgs $8) with their clocks measured against their org's
    targets ($1 to $4, as of $7): a CTE `t` of (oid, grp, b, classification, escalated, ...)."""
    return f"""
    WITH r AS MATERIALIZED (  -- the period's tickets first (one index range), then their targets
        SELECT t.oid, t.severity, {grp} AS grp, {bucket} AS b, t.classification, t.escalated, t.status,
               t.status_changed_at, t.created_at, t.acknowledged_at, t.resolved_at
        FROM report_tickets t WHERE t.oid = ANY($8::text[]) AND t.created_at >= $5 AND t.created_at < $6
    ), t AS (
        SELECT r.oid, r.grp, r.b, r.classification, r.escalated, r.acknowledged_at, r.resolved_at,
               extract(epoch FROM r.acknowledged_at - r.created_at)::float8 AS tta,
               extract(epoch FROM r.resolved_at - r.created_at)::float8 AS ttr,
               CASE WHEN r.status IN ('closed', 'merged') THEN r.status_changed_at ELSE $7 END AS stop_at,
               ticketing_sla_due(r.created_at, c.mtta) AS ack_deadline,
               ticketing_sla_due(r.created_at, c.mttr) AS res_deadline
        FROM r JOIN unnest($1::text[], $2::text[], $3::int[], $4::int[]) AS c(oid, severity, mtta, mttr)
            ON r.oid = c.oid AND r.severity = c.severity
    )"""


def _time_columns(prefix: str, duration: str, stopped: str, deadline: str, distributions: bool) -> str:
    every = (
        f" array_agg({duration} ORDER BY {duration}) FILTER (WHERE {duration} IS NOT NULL) AS {prefix}_all,"
        if distributions
        else ""
    )
    return (
        f" count({duration}) AS {prefix}_n, avg({duration})::float8 AS {prefix}_mean,"
        f" percentile_cont(0.5) WITHIN GROUP (ORDER BY {duration}) AS {prefix}_median,"
        f" percentile_cont(0.9) WITHIN GROUP (ORDER BY {duration}) AS {prefix}_p90,{every}"
        f" count(*) FILTER (WHERE {stopped} IS NOT NULL AND {stopped} <= {deadline}) AS {prefix}_in,"
        f" count(*) FILTER (WHERE {stopped} IS NOT NULL OR stop_at > {deadline}) AS {prefix}_den"
    )


def _figures(distributions: bool) -> str:
    """What the summary and the trend measure of a set of tickets (the columns _metrics reads);
    with `distributions`, also every duration, sorted, for a merge across databases."""
    return f"""count(*) FILTER (WHERE classification = 'true_positive') AS tp,
        count(*) FILTER (WHERE classification = 'false_positive') AS fp,
        count(*) FILTER (WHERE classification = 'pending') AS pending,
        count(*) FILTER (WHERE escalated) AS escalated,
        {_time_columns("tta", "tta", "acknowledged_at", "ack_deadline", distributions)},
        {_time_columns("ttr", "ttr", "resolved_at", "res_deadline", distributions)}"""


_ADDED: Final = ("total", "tp", "fp", "pending", "escalated", "tta_in", "tta_den", "ttr_in", "ttr_den")


def _percentile(ordered: list[float], p: float) -> float | None:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    if not ordered:
        return None
    at = p * (len(ordered) - 1)
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (at - low) * (ordered[high] - ordered[low])


def combined(rows: list[Row]) -> Row:
    """One set of tickets' figures from its parts on several databases (rows with distributions):
    counts add, and the mean, median and p90 are those of every duration, as one query gives."""
    if len(rows) == 1:
        return rows[0]
    out: dict[str, Any] = dict(rows[0].items())
    for key in _ADDED:
        out[key] = sum(r[key] for r in rows)
    for prefix in ("tta", "ttr"):
        every = list(heapq.merge(*(r[f"{prefix}_all"] or [] for r in rows)))
        out[f"{prefix}_all"] = every
        out[f"{prefix}_n"] = len(every)
        out[f"{prefix}_mean"] = math.fsum(every) / len(every) if every else None
        out[f"{prefix}_median"] = _percentile(every, 0.5)
        out[f"{prefix}_p90"] = _percentile(every, 0.9)
    return out


def _merged(shares: list[Sequence[Row]], key: Callable[[Row], Hashable]) -> Sequence[Row]:
    """The rows of every database's share, those of the same key (a set of tickets spanning
    databases: every org's, a bucket) combined."""
    if len(shares) == 1:
        return shares[0]
    parts: dict[Hashable, list[Row]] = {}
    for rows in shares:
        for r in rows:
            parts.setdefault(key(r), []).append(r)
    return [combined(rs) for rs in parts.values()]


async def summary_rows(
    conn: db.Connection,
    configs: dict[str, OrgConfig],
    period_from: datetime,
    period_to: datetime,
    group_by: GroupBy | None,
    now: datetime,
    distributions: bool = False,
) -> Sequence[Row]:
    """One database's figures for these orgs: per org, (per group,) and over them all; `summary_of`
    makes the report of one database's rows, or of several's."""
    t_oids, severities, mtta, mttr, _ = sla_targets(configs)
    grp = GROUP_EXPR[group_by] if group_by else "NULL::text"
    sets = "(oid, grp), (oid), (grp), ()" if group_by else "(oid), ()"
    sql = f"""
    {_measured(grp, "NULL::timestamptz")}
    SELECT oid, {"grp" if group_by else "NULL AS grp"}, GROUPING(oid) AS all_orgs,
        {"GROUPING(grp)" if group_by else "1"} AS all_groups, count(*) AS total,
        {_figures(distributions)}
    FROM t GROUP BY GROUPING SETS ({sets})
    """
    return await conn.fetch(sql, t_oids, severities, mtta, mttr, period_from, period_to, now, list(configs))


def summary_of(
    configs: dict[str, OrgConfig],
    period_from: datetime,
    period_to: datetime,
    group_by: GroupBy | None,
    shares: list[Sequence[Row]],
) -> SummaryReport:
    """The report from each database's rows (their orgs' configs together in `configs`); the rows
    over all orgs of several databases are combined (they need `distributions`)."""
    orgs: dict[str, Metrics] = {oid: _empty() for oid in configs}
    aggregate = _empty()
    grouped: dict[str | None, dict[str, Metrics]] = {}
    # an org's rows come from its one database; the rows over every org, from each
    rows = _merged(shares, lambda r: (r["all_orgs"], r["all_groups"], r["grp"], r["oid"]))
    for r in rows:
        m = _metrics(r)
        scope = None if r["all_orgs"] else r["oid"]
        if r["all_groups"]:
            if scope is None:
                aggregate = m
            else:
                orgs[scope] = m
        else:
            grouped.setdefault(scope, {})[str(r["grp"])] = m
    if group_by:
        aggregate.groups = grouped.get(None, {})
        for oid, m in orgs.items():
            m.groups = grouped.get(oid, {})
    return SummaryReport(period_from, period_to, group_by, orgs, aggregate)


Interval = Literal["day", "week"]
TREND_BUCKETS_MAX: Final = 400  # a year of days, or eight of weeks


class TrendFigures(msgspec.Struct):
    opened: int  # tickets created in the bucket (whose clocks and verdicts the rest measure)
    closed: int  # tickets closed in the bucket
    mtta: TimeStats
    mttr: TimeStats
    true_positives: int
    false_positives: int
    false_positive_rate_pct: float | None  # over the bucket's classified tickets


class TrendBucket(TrendFigures):
    start: datetime
    groups: dict[str, TrendFigures] | None = None


class TrendReport(msgspec.Struct):
    period_from: datetime
    period_to: datetime
    interval: Interval
    group_by: str | None
    buckets: list[TrendBucket]


def _trend_key(r: Row) -> tuple[datetime, str | None]:
    return r["b"], None if r["all_groups"] else str(r["grp"])


def _no_figures(closed: int = 0) -> TrendFigures:
    none = _empty()
    return TrendFigures(0, closed, none.mtta, none.mttr, 0, 0, None)


def bucket_starts(period_from: datetime, period_to: datetime, interval: Interval) -> list[datetime]:
    """UTC days, or ISO weeks from Monday, that the period touches."""
    day = period_from.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = day - timedelta(days=day.weekday()) if interval == "week" else day
    step = timedelta(days=7 if interval == "week" else 1)
    out = []
    while start < period_to:
        out.append(start)
        start += step
    return out


async def trend_rows(
    conn: db.Connection,
    configs: dict[str, OrgConfig],
    period_from: datetime,
    period_to: datetime,
    interval: Interval,
    group_by: GroupBy | None,
    now: datetime,
    distributions: bool = False,
) -> tuple[Sequence[Row], Sequence[Row]]:
    """One database's figures of the tickets opened per bucket (and group), and its closes; `trend_of`
    makes the report (per day or week: tickets opened and closed, MTTA and MTTR (median, p90) and SLA
    compliance of the tickets opened, and their false-positive rate; every bucket of the period)."""
    t_oids, severities, mtta, mttr, _ = sla_targets(configs)
    grp = GROUP_EXPR[group_by] if group_by else "NULL::text"
    bucket = f"date_trunc('{interval}', t.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    sets = "(b, grp), (b)" if group_by else "(b)"
    grouped = "grp, GROUPING(grp) AS all_groups" if group_by else "NULL AS grp, 1 AS all_groups"
    sql = f"""
    {_measured(grp, bucket)}
    SELECT b, {grouped}, count(*) AS total, {_figures(distributions)}
    FROM t GROUP BY GROUPING SETS ({sets})
    """
    args = (t_oids, severities, mtta, mttr, period_from, period_to, now, list(configs))
    opened = await conn.fetch(sql, *args)
    closed = await conn.fetch(
        f"SELECT b, {grouped}, count(*) AS n FROM ("
        f"  SELECT date_trunc('{interval}', t.closed_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS b,"
        f"  {grp} AS grp"
        "   FROM report_tickets t WHERE t.oid = ANY($1::text[]) AND t.closed_at >= $2 AND t.closed_at < $3"
        f") AS c GROUP BY GROUPING SETS ({sets})",
        list(configs),
        period_from,
        period_to,
    )
    return opened, closed


def trend_of(
    period_from: datetime,
    period_to: datetime,
    interval: Interval,
    group_by: GroupBy | None,
    shares: list[tuple[Sequence[Row], Sequence[Row]]],
) -> TrendReport:
    """The report from each database's rows; a bucket's rows from several are combined."""
    starts = bucket_starts(period_from, period_to, interval)
    # (bucket, group or None for the bucket as a whole) -> its figures
    figures: dict[tuple[datetime, str | None], TrendFigures] = {}
    for _, closed in shares:
        for r in closed:
            key = _trend_key(r)
            figures[key] = _no_figures((figures[key].closed if key in figures else 0) + r["n"])
    for r in _merged([opened for opened, _ in shares], _trend_key):
        m, key = _metrics(r), _trend_key(r)
        closes = figures[key].closed if key in figures else 0
        figures[key] = TrendFigures(m.total, closes, m.mtta, m.mttr, m.true_positives, m.false_positives,
                                    m.false_positive_rate_pct)  # fmt: skip
    groups: dict[datetime, dict[str, TrendFigures]] = {}
    for (start, group), f in sorted(figures.items(), key=lambda kv: str(kv[0][1])):
        if group is not None:
            groups.setdefault(start, {})[group] = f
    buckets = [
        TrendBucket(
            **msgspec.structs.asdict(figures.get((start, None)) or _no_figures()),
            start=start,
            groups=groups.get(start, {}) if group_by else None,
        )
        for start in starts
    ]
    return TrendReport(period_from, period_to, interval, group_by, buckets)


TREND_COLUMNS = (
    "bucket", "group", "opened", "closed", "mtta_median_s", "mtta_p90_s", "mtta_sla_compliance_pct",
    "mttr_median_s", "mttr_p90_s", "mttr_sla_compliance_pct", "false_positive_rate_pct",
)  # fmt: skip


def trend_csv(report: TrendReport) -> str:
    """One row per bucket (and per group within it): what a spreadsheet charts."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(TREND_COLUMNS)
    for b in report.buckets:
        rows: list[tuple[str, TrendFigures]] = [("", b), *(b.groups or {}).items()]
        for group, f in rows:
            w.writerow([b.start.isoformat(), group, f.opened, f.closed, f.mtta.median_s, f.mtta.p90_s,
                        f.mtta.sla_compliance_pct, f.mttr.median_s, f.mttr.p90_s, f.mttr.sla_compliance_pct,
                        f.false_positive_rate_pct])  # fmt: skip
    return out.getvalue()
