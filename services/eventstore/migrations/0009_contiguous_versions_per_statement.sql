-- Versions stay contiguous (see 0001), checked once per appending statement instead of once per
-- row: a PL/pgSQL call per event was ~40% of the database's cost of appending (measured: 2.0-2.4 s
-- of backend CPU per 100,000 events with the row trigger, 1.4 s with this one). After the
-- statement every row of the batch is visible, so a batch holding versions 1..n of a new stream
-- passes, and a gap anywhere in it refuses the whole append.
DROP TRIGGER events_contiguous_version ON events;
DROP FUNCTION events_contiguous_version();

CREATE FUNCTION events_contiguous_versions() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    gap record;
BEGIN
    SELECT n.stream_id, n.version INTO gap FROM new_events n
    WHERE n.version > 1 AND NOT EXISTS (
        SELECT 1 FROM events e WHERE e.stream_id = n.stream_id AND e.version = n.version - 1
    )
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'stream % has no version %', gap.stream_id, gap.version - 1
            USING ERRCODE = 'serialization_failure', HINT = 'events_version_gap';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER events_contiguous_versions AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION events_contiguous_versions();
