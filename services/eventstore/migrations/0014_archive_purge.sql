-- Archived data is kept two years (the seed's "Data Retention"), then purged: the archived
-- events, the facts reports kept and the archive file go; archive_log keeps the record that the
-- ticket existed, was archived and when it was purged.
ALTER TABLE archive_log ADD COLUMN purged_at timestamptz;
CREATE INDEX archive_log_unpurged ON archive_log (archived_at) WHERE purged_at IS NULL;

-- A second path past the append-only guard, as narrow as the first: deleting the archived events
-- of the one stream that the purging transaction named with SET LOCAL ticketing.purge_stream.
CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'events' AND TG_OP = 'DELETE'
       AND current_setting('ticketing.archive_stream', true) = OLD.stream_id::text THEN
        RETURN OLD;
    END IF;
    IF TG_TABLE_NAME = 'events_archive' AND TG_OP = 'DELETE'
       AND current_setting('ticketing.purge_stream', true) = OLD.stream_id::text THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the event store is append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
