-- Webhook deliveries leave the checkpoint's transaction (an endpoint must never hold a database
-- transaction open): the subscription queues every event of an org that has a webhook here, and
-- the deliverer POSTs from the queue outside any transaction, deleting what went through. What
-- used to wait in webhook_failures waits here the same way.
ALTER TABLE webhook_failures RENAME TO webhook_queue;
ALTER TABLE webhook_queue RENAME CONSTRAINT webhook_failures_pkey TO webhook_queue_pkey;
ALTER TABLE webhook_queue ADD COLUMN stream_id uuid;
UPDATE webhook_queue q SET stream_id = e.stream_id FROM events e WHERE e.position = q.position;
ALTER TABLE webhook_queue
    ALTER COLUMN attempts SET DEFAULT 0,
    ALTER COLUMN last_error DROP NOT NULL,
    ALTER COLUMN first_failed_at DROP NOT NULL,
    ALTER COLUMN first_failed_at DROP DEFAULT,
    ALTER COLUMN last_attempt_at DROP NOT NULL,
    ALTER COLUMN last_attempt_at DROP DEFAULT;
-- Rows queued behind a failure but never tried carried a marker, not an error.
UPDATE webhook_queue SET last_error = NULL, first_failed_at = NULL, last_attempt_at = NULL WHERE attempts = 0;
