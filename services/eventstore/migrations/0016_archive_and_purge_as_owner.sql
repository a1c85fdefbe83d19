-- Least privilege: the services' runtime role may INSERT and SELECT events, never UPDATE or DELETE
-- them (the migrate step grants and revokes; see migrate.grant_runtime). The two narrow paths past
-- the append-only guard, archiving a ticket's events and purging them two years later, are these
-- functions, which run as their owner: the runtime role can call them, not do what they do.
-- Each acts only on a stream it can vouch for, and leaves its trace in archive_log.

CREATE FUNCTION ticketing_archive_stream(p_stream uuid, p_archived_at timestamptz) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    moved integer;
BEGIN
    -- Only a ticket the read model shows resolved or closed: an open one is never archived.
    IF NOT EXISTS (SELECT 1 FROM tickets WHERE ticket_id = p_stream AND status IN ('resolved', 'closed')) THEN
        RAISE EXCEPTION 'ticket % is not resolved or closed: not archived', p_stream
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM set_config('ticketing.archive_stream', p_stream::text, true);
    INSERT INTO events_archive
        (position, event_id, stream_id, version, type, data, metadata, recorded_at, archived_at)
    SELECT position, event_id, stream_id, version, type, data, metadata, recorded_at, p_archived_at
    FROM events WHERE stream_id = p_stream;
    DELETE FROM events WHERE stream_id = p_stream;
    GET DIAGNOSTICS moved = ROW_COUNT;
    PERFORM set_config('ticketing.archive_stream', '', true);
    RETURN moved;
END $$;

CREATE FUNCTION ticketing_purge_stream(p_stream uuid) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    purged integer;
BEGIN
    -- Only a stream that was archived and not purged yet: a live ticket's events stay out of reach.
    IF NOT EXISTS (SELECT 1 FROM archive_log WHERE ticket_id = p_stream AND purged_at IS NULL) THEN
        RAISE EXCEPTION 'stream % has no unpurged archive: not purged', p_stream
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM set_config('ticketing.purge_stream', p_stream::text, true);
    DELETE FROM events_archive WHERE stream_id = p_stream;
    GET DIAGNOSTICS purged = ROW_COUNT;
    PERFORM set_config('ticketing.purge_stream', '', true);
    RETURN purged;
END $$;

REVOKE ALL ON FUNCTION ticketing_archive_stream(uuid, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION ticketing_purge_stream(uuid) FROM PUBLIC;
