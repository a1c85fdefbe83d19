-- Unsubscribing an org deletes all its ticket data (the seed's Data Retention). What survives is
-- its tombstone: who asked, when, when it was done and what was deleted.
CREATE TABLE org_tombstones (
    oid           text        PRIMARY KEY,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    requested_by  text        NOT NULL,
    completed_at  timestamptz,
    counts        jsonb       NOT NULL DEFAULT '{}'
);

-- A third path past the append-only guard, as narrow as the other two: deleting the events of the
-- one org that the purging transaction named with SET LOCAL ticketing.purge_org.
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
    IF TG_OP = 'DELETE' AND coalesce(current_setting('ticketing.purge_org', true), '') <> ''
       AND current_setting('ticketing.purge_org', true) = OLD.metadata->>'oid' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the event store is append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

-- Runs as its owner: the runtime role may call it, not do what it does. Only for an org with a
-- tombstone (the audit record comes first), and only events that name that org.
CREATE FUNCTION ticketing_purge_org_streams(p_oid text, p_streams uuid[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    live integer;
    archived integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM org_tombstones WHERE oid = p_oid) THEN
        RAISE EXCEPTION 'org % has no tombstone: not purged', p_oid USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM set_config('ticketing.purge_org', p_oid, true);
    DELETE FROM events WHERE stream_id = ANY(p_streams) AND metadata->>'oid' = p_oid;
    GET DIAGNOSTICS live = ROW_COUNT;
    DELETE FROM events_archive WHERE stream_id = ANY(p_streams) AND metadata->>'oid' = p_oid;
    GET DIAGNOSTICS archived = ROW_COUNT;
    PERFORM set_config('ticketing.purge_org', '', true);
    RETURN live + archived;
END $$;
REVOKE ALL ON FUNCTION ticketing_purge_org_streams(text, uuid[]) FROM PUBLIC;
