-- Outbound deliveries of every kind wait in one queue: the webhooks' messages and the ExtraHop
-- detection updates. `channel` says which; `subject` is what must see its rows in order (a
-- ticket for webhooks, a detection for ExtraHop, whose updates follow it through merges).
ALTER TABLE webhook_queue RENAME TO delivery_queue;
ALTER TABLE delivery_queue RENAME CONSTRAINT webhook_queue_pkey TO delivery_queue_pkey;
ALTER TABLE delivery_queue ADD COLUMN channel text NOT NULL DEFAULT 'webhook';
ALTER TABLE delivery_queue ADD COLUMN subject text;
UPDATE delivery_queue SET subject = stream_id::text;
ALTER TABLE delivery_queue ALTER COLUMN subject SET NOT NULL, ALTER COLUMN channel DROP DEFAULT;
ALTER TABLE delivery_queue DROP CONSTRAINT delivery_queue_pkey;
ALTER TABLE delivery_queue ADD PRIMARY KEY (channel, oid, position, subject);
ALTER TABLE delivery_queue DROP COLUMN stream_id;

-- Secrets an org gives for its integrations (the ExtraHop appliance's API key): never in its
-- configuration, which the event store records and GET shows.
CREATE TABLE org_secrets (
    oid     text        NOT NULL,
    name    text        NOT NULL,
    secret  text        NOT NULL,
    set_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (oid, name)
);

-- Requests an org's endpoint refused (a 4xx that asking again would not change): skipped, and
-- counted here so that the org's admin sees them.
CREATE TABLE delivery_refusals (
    channel          text        NOT NULL,
    oid              text        NOT NULL,
    refused          bigint      NOT NULL,
    last_refusal     text        NOT NULL,
    last_refused_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, oid)
);
