-- Retention: events of archived tickets move here; the live store no longer scans them.
CREATE TABLE events_archive (
    position     bigint PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    stream_id    uuid        NOT NULL,
    version      integer     NOT NULL,
    type         text        NOT NULL,
    data         jsonb       NOT NULL,
    metadata     jsonb       NOT NULL,
    recorded_at  timestamptz NOT NULL,
    archived_at  timestamptz NOT NULL
);
CREATE INDEX events_archive_stream ON events_archive (stream_id, version);
CREATE TRIGGER events_archive_no_update BEFORE UPDATE OR DELETE ON events_archive
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_archive_no_truncate BEFORE TRUNCATE ON events_archive
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

-- The one path past the append-only guard: deleting the events of the one stream that the
-- archiving transaction named with SET LOCAL ticketing.archive_stream. UPDATE stays refused.
CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'events' AND TG_OP = 'DELETE'
       AND current_setting('ticketing.archive_stream', true) = OLD.stream_id::text THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the event store is append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

-- Every move, recorded.
CREATE TABLE archive_log (
    ticket_id       uuid PRIMARY KEY,
    oid             text        NOT NULL,
    ticket_number   integer     NOT NULL,
    events          integer     NOT NULL,
    first_position  bigint      NOT NULL,
    last_position   bigint      NOT NULL,
    location        text        NOT NULL,
    sha256          text        NOT NULL,
    bytes           integer     NOT NULL,
    archived_at     timestamptz NOT NULL,
    archived_by     text        NOT NULL
);
CREATE INDEX archive_log_org ON archive_log (oid, archived_at);

-- The facts reports need, kept for archived tickets.
CREATE TABLE archived_tickets (
    ticket_id          uuid PRIMARY KEY,
    oid                text        NOT NULL,
    ticket_number      integer     NOT NULL,
    status             text        NOT NULL,
    severity           text        NOT NULL,
    classification     text        NOT NULL,
    assignee           text,
    detection_cat      text,
    sensor_id          text,
    escalated          boolean     NOT NULL,
    created_at         timestamptz NOT NULL,
    acknowledged_at    timestamptz,
    resolved_at        timestamptz,
    closed_at          timestamptz,
    status_changed_at  timestamptz
);
CREATE INDEX archived_tickets_org_created ON archived_tickets (oid, created_at);

CREATE VIEW report_tickets AS
    SELECT oid, ticket_number, status, severity, classification, assignee, detection_cat, sensor_id, escalated,
           created_at, acknowledged_at, resolved_at, closed_at, status_changed_at
    FROM tickets
    UNION ALL
    SELECT oid, ticket_number, status, severity, classification, assignee, detection_cat, sensor_id, escalated,
           created_at, acknowledged_at, resolved_at, closed_at, status_changed_at
    FROM archived_tickets;
