-- SLA at risk (issue 32): the at-risk rule once, as ticketing_sla_started_by (domain.sla.at_risk_at
-- is the same rule): a clock of `minutes` is at `percent` of its budget by `at` if it started at or
-- before this.
CREATE FUNCTION ticketing_sla_at_risk_by(at timestamptz, minutes integer, percent integer) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT at - make_interval(secs => minutes * 0.6 * percent) $$;

-- When each running clock was found past its org's share of the budget; the scheduler's index
-- carries them, so a tick still reads index pages only (migration 0010).
ALTER TABLE tickets
    ADD COLUMN mtta_at_risk_at timestamptz,
    ADD COLUMN mttr_at_risk_at timestamptz;
DROP INDEX tickets_sla_open;
CREATE INDEX tickets_sla_open ON tickets (oid, severity, created_at)
    INCLUDE (acknowledged_at, resolved_at, mtta_breached_at, mttr_breached_at, mtta_at_risk_at, mttr_at_risk_at,
             ticket_id)
    WHERE status IN ('new', 'acknowledged', 'in_progress', 'escalated');

-- Task checklists (issue 32): each ticket's tasks, for the tasks list and the tasks report.
CREATE TABLE ticket_tasks (
    task_id      uuid        PRIMARY KEY,
    ticket_id    uuid        NOT NULL,
    oid          text        NOT NULL,
    title        text        NOT NULL,
    description  text,
    mandatory    boolean     NOT NULL,
    assignee     text,
    done         boolean     NOT NULL DEFAULT false,
    added_at     timestamptz NOT NULL,
    done_at      timestamptz,
    position     bigint      NOT NULL
);
CREATE INDEX ticket_tasks_ticket ON ticket_tasks (ticket_id, position);
CREATE INDEX ticket_tasks_done ON ticket_tasks (oid, done_at) WHERE done;

-- Routing (issue 32), the write side's, kept in the transaction of the events they follow from:
-- where each routing rule's turn stands, how many open tickets each analyst holds, who is away.
CREATE TABLE routing_turns (
    oid          text NOT NULL,
    rule         int  NOT NULL,  -- the rule's index in the org's routing.rules
    last_pick    int  NOT NULL,  -- the index of the analyst it picked last
    PRIMARY KEY (oid, rule)
);
CREATE TABLE analyst_loads (
    oid          text NOT NULL,
    analyst      text NOT NULL,
    open_tickets int  NOT NULL,
    PRIMARY KEY (oid, analyst)
);
INSERT INTO analyst_loads (oid, analyst, open_tickets)
SELECT oid, assignee, count(*) FROM tickets
WHERE assignee IS NOT NULL AND status IN ('new', 'acknowledged', 'in_progress', 'escalated')
GROUP BY oid, assignee;
CREATE TABLE analysts_away (
    oid          text        NOT NULL,
    analyst      text        NOT NULL,
    away_until   timestamptz NOT NULL,
    set_by       text        NOT NULL,
    set_at       timestamptz NOT NULL,
    PRIMARY KEY (oid, analyst)
);
