-- Read model of tickets (projections/tickets.py). Rebuildable from the event store.
CREATE TABLE tickets (
    ticket_id              uuid PRIMARY KEY,
    oid                    text        NOT NULL,
    ticket_number          integer     NOT NULL,
    status                 text        NOT NULL,
    severity               text        NOT NULL,
    severity_rank          smallint    NOT NULL,
    classification         text        NOT NULL DEFAULT 'pending',
    assignee               text,
    escalation_group       text,
    investigation_id       text,
    summary                text,
    conclusion             text,
    tags                   text[]      NOT NULL DEFAULT '{}',
    tags_folded            text[]      NOT NULL DEFAULT '{}',
    detection_count        integer     NOT NULL DEFAULT 0,
    detection_id           text,
    detection_cat          text,
    detection_source       text,
    detection_priority     smallint,
    sensor_id              text,
    hostname               text,
    created_at             timestamptz NOT NULL,
    acknowledged_at        timestamptz,
    resolved_at            timestamptz,
    closed_at              timestamptz,
    merged_into_ticket_id  uuid,
    updated_at             timestamptz NOT NULL,
    UNIQUE (oid, ticket_number)
);
CREATE INDEX tickets_org_created ON tickets (oid, created_at, ticket_number, ticket_id);
CREATE INDEX tickets_org_severity ON tickets (oid, severity_rank, created_at, ticket_number, ticket_id);
CREATE INDEX tickets_org_status ON tickets (oid, status, created_at);
CREATE INDEX tickets_tags ON tickets USING gin (tags_folded);

CREATE TABLE ticket_detections (
    ticket_id           uuid        NOT NULL,
    detection_id        text        NOT NULL,
    oid                 text        NOT NULL,
    detection_cat       text        NOT NULL,
    detection_source    text        NOT NULL,
    detection_priority  smallint    NOT NULL,
    sensor_id           text        NOT NULL,
    hostname            text        NOT NULL,
    detected_at         timestamptz NOT NULL,
    source_format       text        NOT NULL,
    linked_at           timestamptz NOT NULL,
    position            bigint      NOT NULL,
    PRIMARY KEY (ticket_id, detection_id)
);
