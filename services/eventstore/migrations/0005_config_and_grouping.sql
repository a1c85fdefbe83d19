-- Each org's current configuration (its history is the config_updated events of the org's stream).
CREATE TABLE org_configs (
    oid      text PRIMARY KEY,
    config   jsonb   NOT NULL,
    version  integer NOT NULL
);

-- Auto-grouping candidates, kept by the command handler in the transaction of the ticket's events.
CREATE TABLE grouping_index (
    ticket_id          uuid PRIMARY KEY,
    oid                text        NOT NULL,
    group_key          text        NOT NULL,
    first_detected_at  timestamptz NOT NULL,
    detection_count    integer     NOT NULL,
    open               boolean     NOT NULL
);
CREATE INDEX grouping_index_lookup ON grouping_index (oid, group_key, first_detected_at) WHERE open;
