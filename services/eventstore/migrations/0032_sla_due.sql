-- The queue's `sort=sla_due` (issue 33): each open ticket's next deadline, kept on the row and
-- indexed per org. A ticket not acknowledged is due to be by created_at + its MTTA target; one
-- acknowledged and not resolved by created_at + its MTTR target (ticketing_sla_due, domain/sla.py's
-- rule); any other has no running clock (NULL). Targets are the org's sla_config for the ticket's
-- severity, else the defaults (domain.config.DEFAULT_CONFIG: a test holds the two equal).
CREATE FUNCTION ticketing_default_sla() RETURNS TABLE (severity text, mtta int, mttr int)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ VALUES ('critical', 15, 240), ('high', 15, 720), ('medium', 60, 1440), ('low', 100, 2800) $$;

CREATE FUNCTION ticketing_sla_due_at(p_oid text, p_severity text, p_status text, p_created timestamptz,
                                     p_acknowledged timestamptz, p_resolved timestamptz) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT CASE
        WHEN p_status NOT IN ('new', 'acknowledged', 'in_progress', 'escalated') THEN NULL
        WHEN p_acknowledged IS NULL THEN ticketing_sla_due(p_created, t.mtta)
        WHEN p_resolved IS NULL THEN ticketing_sla_due(p_created, t.mttr)
    END
    FROM (
        SELECT coalesce((c.config -> 'sla_config' -> p_severity ->> 'mtta_minutes')::int, d.mtta) AS mtta,
               coalesce((c.config -> 'sla_config' -> p_severity ->> 'mttr_minutes')::int, d.mttr) AS mttr
        FROM ticketing_default_sla() AS d
        LEFT JOIN org_configs c ON c.oid = p_oid
        WHERE d.severity = p_severity
    ) AS t
    $$;

ALTER TABLE tickets ADD COLUMN sla_due_at timestamptz;

CREATE FUNCTION ticketing_set_sla_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.sla_due_at := ticketing_sla_due_at(NEW.oid, NEW.severity, NEW.status, NEW.created_at,
                                           NEW.acknowledged_at, NEW.resolved_at);
    RETURN NEW;
END $$;

CREATE TRIGGER tickets_sla_due BEFORE INSERT OR UPDATE OF status, severity, acknowledged_at, resolved_at
    ON tickets FOR EACH ROW EXECUTE FUNCTION ticketing_set_sla_due();

UPDATE tickets SET sla_due_at = ticketing_sla_due_at(oid, severity, status, created_at, acknowledged_at, resolved_at)
    WHERE status IN ('new', 'acknowledged', 'in_progress', 'escalated');

CREATE INDEX tickets_sla_due ON tickets (oid, sla_due_at, ticket_number, ticket_id) WHERE sla_due_at IS NOT NULL;
