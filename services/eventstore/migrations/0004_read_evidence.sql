-- Read model of investigation evidence (projections/tickets.py).
CREATE TABLE ticket_entities (
    entity_id     uuid PRIMARY KEY,
    ticket_id     uuid        NOT NULL,
    oid           text        NOT NULL,
    entity_type   text        NOT NULL,
    entity_value  text        NOT NULL,
    name          text,
    verdict       text        NOT NULL,
    context       text,
    first_seen    timestamptz,
    last_seen     timestamptz,
    added_at      timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX ticket_entities_ticket ON ticket_entities (ticket_id, added_at);
-- Cross-ticket indicator search: "which tickets of these orgs hold this IOC?"
CREATE INDEX ticket_entities_search ON ticket_entities (oid, entity_type, entity_value);
CREATE INDEX ticket_entities_value ON ticket_entities (oid, entity_value);

CREATE TABLE ticket_telemetry (
    telemetry_id   uuid PRIMARY KEY,
    ticket_id      uuid        NOT NULL,
    oid            text        NOT NULL,
    atom           text        NOT NULL,
    sid            text        NOT NULL,
    event_type     text,
    event_summary  text,
    verdict        text,
    relevance      text,
    added_at       timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX ticket_telemetry_ticket ON ticket_telemetry (ticket_id, added_at);

CREATE TABLE ticket_artifacts (
    artifact_id    uuid PRIMARY KEY,
    ticket_id      uuid        NOT NULL,
    oid            text        NOT NULL,
    artifact_type  text        NOT NULL,
    description    text,
    verdict        text,
    url            text,
    path           text,
    hash           text,
    added_at       timestamptz NOT NULL
);
CREATE INDEX ticket_artifacts_ticket ON ticket_artifacts (ticket_id, added_at);

CREATE INDEX tickets_org_assignee ON tickets (oid, assignee) WHERE assignee IS NOT NULL;
