-- Evidence files (issue 35): an artifact may be a file uploaded to the ticket, kept in the
-- evidence store under its SHA-256; a telemetry reference may keep the full LimaCharlie event.
ALTER TABLE ticket_artifacts
    ADD COLUMN name       text,
    ADD COLUMN size       bigint,
    ADD COLUMN media_type text,
    ADD COLUMN sha256     text;
ALTER TABLE ticket_telemetry ADD COLUMN event jsonb;
