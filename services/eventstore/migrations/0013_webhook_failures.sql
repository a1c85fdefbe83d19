-- Ticket events an org's webhook endpoint has not taken yet, in log order per org: the ones it
-- failed after the retries and every later one of the org, queued behind them so the endpoint
-- sees each ticket's events in order. Sent again, oldest first, until they go through.
CREATE TABLE webhook_failures (
    oid              text        NOT NULL,
    position         bigint      NOT NULL,
    event_id         uuid        NOT NULL,
    body             bytea       NOT NULL,  -- the gzipped message, exactly as it is POSTed
    attempts         integer     NOT NULL,
    last_error       text        NOT NULL,
    first_failed_at  timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (oid, position)
);
