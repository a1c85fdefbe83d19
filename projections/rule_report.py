"""The rule health report: which detection rules (category and source) make the noise.

Per org, category and source, over a period:
- `detections`: the detections detected in the period, on tickets or held by a suppression;
- `suppressed`: those a suppression held;
- `grouped`: those on a ticket that is not their ticket's first (auto-grouped, joined by hand,
  merged in), and `grouped_share` = grouped / detections on tickets;
- `tickets`: the tickets whose first detection is of that rule and was detected in the period (as
  the detections are counted: a replay of old detections reports on when they happened), with their
  true and false positives, the false-positive rate over the classified ones and their median MTTR
  (seconds, PostgreSQL's percentile_cont);
- `needs_tuning`: the false-positive rate is at or above the org's `rule_tuning.false_positive_rate`
  over at least `rule_tuning.min_classified` classified tickets.
Merged tickets are left out: their detections are counted on the ticket they were merged into. A
ticket whose first detection was split off is left out of `tickets` (its first detection is
elsewhere).
"""

from datetime import datetime

import msgspec

from domain.config import OrgConfig
from services.eventstore import db

_REPORT = """
WITH d AS (
    SELECT td.oid, td.detection_cat AS category, td.detection_source AS source, count(*) AS n,
           count(*) FILTER (WHERE td.detection_id IS DISTINCT FROM t.detection_id) AS grouped
    FROM ticket_detections td JOIN tickets t ON t.ticket_id = td.ticket_id
    WHERE td.oid = ANY($1::text[]) AND td.detected_at >= $2 AND td.detected_at < $3 AND t.status <> 'merged'
    GROUP BY 1, 2, 3
), s AS (
    SELECT oid, detection_cat AS category, detection_source AS source, count(*) AS n
    FROM suppressed_detections
    WHERE oid = ANY($1::text[]) AND detected_at >= $2 AND detected_at < $3
    GROUP BY 1, 2, 3
), k AS (
    SELECT t.oid, t.detection_cat AS category, t.detection_source AS source, count(*) AS n,
           count(*) FILTER (WHERE t.classification = 'true_positive') AS tp,
           count(*) FILTER (WHERE t.classification = 'false_positive') AS fp,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM t.resolved_at - t.created_at))
               FILTER (WHERE t.resolved_at IS NOT NULL) AS mttr
    FROM tickets t JOIN ticket_detections f ON f.ticket_id = t.ticket_id AND f.detection_id = t.detection_id
    WHERE t.oid = ANY($1::text[]) AND f.detected_at >= $2 AND f.detected_at < $3 AND t.status <> 'merged'
    GROUP BY 1, 2, 3
)
SELECT coalesce(d.oid, s.oid, k.oid) AS oid, coalesce(d.category, s.category, k.category) AS category,
       coalesce(d.source, s.source, k.source) AS source, coalesce(d.n, 0) AS on_tickets,
       coalesce(d.grouped, 0) AS grouped, coalesce(s.n, 0) AS suppressed, coalesce(k.n, 0) AS tickets,
       coalesce(k.tp, 0) AS tp, coalesce(k.fp, 0) AS fp, k.mttr
FROM d FULL JOIN s USING (oid, category, source) FULL JOIN k USING (oid, category, source)
ORDER BY 1, 2, 3
"""


class RuleHealth(msgspec.Struct):
    oid: str
    category: str
    source: str
    detections: int
    tickets: int
    grouped: int
    grouped_share: float | None
    suppressed: int
    true_positives: int
    false_positives: int
    false_positive_rate: float | None
    median_mttr_seconds: float | None
    needs_tuning: bool


class RuleReport(msgspec.Struct):
    period_from: datetime
    period_to: datetime
    rules: list[RuleHealth]


CSV_COLUMNS = RuleHealth.__struct_fields__


async def rule_report(
    conn: db.Connection, configs: dict[str, OrgConfig], period_from: datetime, period_to: datetime
) -> RuleReport:
    async with conn.transaction():
        # Planned for its very period and orgs each time: asyncpg prepares the statement, and after
        # five runs PostgreSQL would keep a generic plan that reads every org's detections (at
        # 1,000,000 tickets, 1.5 s for one org's 90 days instead of 0.1 s: docs/benchmarks.md).
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        rows = await conn.fetch(_REPORT, list(configs), period_from, period_to)
    out = []
    for r in rows:
        tuning = configs[r["oid"]].rule_tuning
        classified = r["tp"] + r["fp"]
        rate = r["fp"] / classified if classified else None
        on_tickets = r["on_tickets"]
        out.append(
            RuleHealth(
                oid=r["oid"],
                category=r["category"],
                source=r["source"],
                detections=on_tickets + r["suppressed"],
                tickets=r["tickets"],
                grouped=r["grouped"],
                grouped_share=r["grouped"] / on_tickets if on_tickets else None,
                suppressed=r["suppressed"],
                true_positives=r["tp"],
                false_positives=r["fp"],
                false_positive_rate=rate,
                median_mttr_seconds=r["mttr"],
                needs_tuning=rate is not None
                and classified >= tuning.min_classified
                and rate >= tuning.false_positive_rate,
            )
        )
    return RuleReport(period_from, period_to, out)


def order(rule: RuleHealth) -> tuple[str, str, str]:
    """The report's order (its query's)."""
    return rule.oid, rule.category, rule.source


def as_csv(report: RuleReport) -> str:
    """One row per rule, RFC 4180 quoting. Categories are free text from the detection engines: one
    that starts like a spreadsheet formula is prefixed with a quote, so it is never run as one."""

    def cell(value: object) -> str:
        text = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        if isinstance(value, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r"):
            text = "'" + text
        if any(c in text for c in ',"\r\n'):
            text = '"' + text.replace('"', '""') + '"'
        return text

    lines = [",".join(CSV_COLUMNS)]
    lines += [",".join(cell(getattr(r, c)) for c in CSV_COLUMNS) for r in report.rules]
    return "\r\n".join(lines) + "\r\n"
