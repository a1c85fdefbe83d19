-- Noise control (issue 31): grouping rules and their reasons, sliding windows, recurrence,
-- suppressions, split.

-- A detection's entity values (what grouping rules may key on), and why it is on its ticket.
ALTER TABLE ticket_detections
    ADD COLUMN entities jsonb,
    ADD COLUMN grouping jsonb;

-- Tickets a recurrence linked a ticket to, or split from or off it (either way).
ALTER TABLE tickets ADD COLUMN related_ticket_numbers int[] NOT NULL DEFAULT '{}';

-- A sliding window moves with its group's last detection; a recurrence finds its group's
-- resolved ticket (resolved_at is set while the ticket is resolved, NULL otherwise).
ALTER TABLE grouping_index
    ADD COLUMN last_detected_at timestamptz,
    ADD COLUMN resolved_at timestamptz;
CREATE INDEX grouping_index_resolved ON grouping_index (oid, left(group_key, 256), resolved_at)
    WHERE resolved_at IS NOT NULL;

-- Each suppression as its stream makes it (the write side's: the intake reads the active ones
-- in its transaction), with its stream version and what it has held.
CREATE TABLE suppressions (
    suppression_id    uuid        PRIMARY KEY,
    oid               text        NOT NULL,
    suppression       jsonb       NOT NULL,
    created_at        timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    ended_at          timestamptz,
    version           int         NOT NULL,
    held              bigint      NOT NULL DEFAULT 0,
    last_detection_id text,
    last_detected_at  timestamptz,
    last_held_at      timestamptz
);
CREATE INDEX suppressions_org ON suppressions (oid, created_at);

-- The detections suppressions held (read side, for the rule report), one row per detection.
CREATE TABLE suppressed_detections (
    position         bigint      NOT NULL,
    ordinal          int         NOT NULL,
    suppression_id   uuid        NOT NULL,
    oid              text        NOT NULL,
    detection_id     text        NOT NULL,
    detection_cat    text        NOT NULL,
    detection_source text        NOT NULL,
    detected_at      timestamptz NOT NULL,
    PRIMARY KEY (position, ordinal)
);
CREATE INDEX suppressed_detections_org ON suppressed_detections (oid, detected_at);
