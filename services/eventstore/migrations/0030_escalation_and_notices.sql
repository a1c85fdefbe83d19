-- Escalation policies (issue 32): how many steps of its policy each ticket has taken, and the
-- scheduler's index of unacknowledged tickets (small: only those nobody has taken yet), which
-- carries the columns it reads, so a tick reads index pages only (as tickets_sla_open).
ALTER TABLE tickets ADD COLUMN escalation_steps int NOT NULL DEFAULT 0;
CREATE INDEX tickets_unacknowledged ON tickets (oid, severity, created_at)
    INCLUDE (escalation_steps, ticket_id)
    WHERE acknowledged_at IS NULL AND status IN ('new', 'escalated');

-- Notification bursts (issue 32), the notifier's, kept in the transaction of its checkpoint: per
-- org and rule, the minute a burst started, how many messages it called for, and how many beyond
-- the org's rollup_per_minute were held for one roll-up, sent once the minute is over.
CREATE TABLE notification_bursts (
    oid           text        NOT NULL,
    rule          text        NOT NULL,  -- the rule's trigger, minimum severity and channels
    started_at    timestamptz NOT NULL,
    count         int         NOT NULL,
    held          int         NOT NULL DEFAULT 0,
    trigger       text        NOT NULL,
    channels      text[]      NOT NULL,
    last_position bigint      NOT NULL,
    last_ticket   int         NOT NULL,  -- the number of the last ticket held
    people        text[]      NOT NULL DEFAULT '{}',  -- whom the held messages were about
    PRIMARY KEY (oid, rule)
);
CREATE INDEX notification_bursts_held ON notification_bursts (started_at) WHERE held > 0;
