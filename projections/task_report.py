"""The tasks report: how long each checklist step takes to complete, per task title.

Over the tasks completed in a period (by when they were completed), per org and title: how many
were completed, the median time from being added to being completed (seconds, PostgreSQL's
percentile_cont), and how many tasks of that title are still open now.
"""

from datetime import datetime

import msgspec

from services.eventstore import db

_REPORT = """
WITH done AS (
    SELECT oid, title, count(*) AS completed,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM done_at - added_at)) AS median
    FROM ticket_tasks WHERE done AND oid = ANY($1::text[]) AND done_at >= $2 AND done_at < $3
    GROUP BY 1, 2
), open AS (
    SELECT oid, title, count(*) AS open FROM ticket_tasks WHERE NOT done AND oid = ANY($1::text[])
    GROUP BY 1, 2
)
SELECT oid, title, coalesce(done.completed, 0) AS completed, done.median, coalesce(open.open, 0) AS open
FROM done FULL JOIN open USING (oid, title) ORDER BY 1, 2
"""


class TaskHealth(msgspec.Struct):
    oid: str
    title: str
    completed: int
    median_seconds_to_complete: float | None
    open: int


class TaskReport(msgspec.Struct):
    period_from: datetime
    period_to: datetime
    tasks: list[TaskHealth]


async def task_report(
    conn: db.Connection, oids: list[str], period_from: datetime, period_to: datetime
) -> TaskReport:
    rows = await conn.fetch(_REPORT, oids, period_from, period_to)
    return TaskReport(period_from, period_to, [TaskHealth(r[0], r[1], r[2], r[3], r[4]) for r in rows])


def order(task: TaskHealth) -> tuple[str, str]:
    """The report's order (its query's)."""
    return task.oid, task.title
