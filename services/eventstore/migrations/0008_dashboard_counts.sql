-- Dashboard counts kept as they change, so the dashboard reads a few dozen rows per org instead of
-- counting every ticket the org ever had. Triggers keep the table exact in the transaction that
-- writes the tickets (projection batch, rebuild, retention), whatever statement made the change.
CREATE TABLE ticket_counts (
    oid          text    NOT NULL,
    status       text    NOT NULL,
    severity     text    NOT NULL,
    acknowledged boolean NOT NULL,
    resolved     boolean NOT NULL,
    n            bigint  NOT NULL,
    PRIMARY KEY (oid, status, severity, acknowledged, resolved)
);

INSERT INTO ticket_counts
SELECT oid, status, severity, acknowledged_at IS NOT NULL, resolved_at IS NOT NULL, count(*)
FROM tickets GROUP BY 1, 2, 3, 4, 5;

CREATE FUNCTION ticket_counts_add(o text, st text, sev text, ack boolean, res boolean, delta bigint)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO ticket_counts AS c VALUES (o, st, sev, ack, res, delta)
    ON CONFLICT (oid, status, severity, acknowledged, resolved) DO UPDATE SET n = c.n + EXCLUDED.n
$$;

-- Inserts and deletes come in batches (projection, rebuild, retention): one aggregate per statement.
CREATE FUNCTION ticket_counts_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO ticket_counts AS c
        SELECT oid, status, severity, acknowledged_at IS NOT NULL, resolved_at IS NOT NULL, count(*)
        FROM new_rows GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (oid, status, severity, acknowledged, resolved) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSE
        INSERT INTO ticket_counts AS c
        SELECT oid, status, severity, acknowledged_at IS NOT NULL, resolved_at IS NOT NULL, -count(*)
        FROM old_rows GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (oid, status, severity, acknowledged, resolved) DO UPDATE SET n = c.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END $$;

-- Updates that move a ticket between counts are rare (status, severity, first ack/resolution):
-- a row trigger whose WHEN clause skips every other update (detection counts, touches) for free.
CREATE FUNCTION ticket_counts_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ticket_counts_add(OLD.oid, OLD.status, OLD.severity,
                              OLD.acknowledged_at IS NOT NULL, OLD.resolved_at IS NOT NULL, -1);
    PERFORM ticket_counts_add(NEW.oid, NEW.status, NEW.severity,
                              NEW.acknowledged_at IS NOT NULL, NEW.resolved_at IS NOT NULL, 1);
    RETURN NULL;
END $$;

CREATE TRIGGER tickets_counts_insert AFTER INSERT ON tickets
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ticket_counts_statement();
CREATE TRIGGER tickets_counts_delete AFTER DELETE ON tickets
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ticket_counts_statement();
CREATE TRIGGER tickets_counts_update AFTER UPDATE OF oid, status, severity, acknowledged_at, resolved_at
    ON tickets FOR EACH ROW
    WHEN (OLD.oid IS DISTINCT FROM NEW.oid OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.severity IS DISTINCT FROM NEW.severity
          OR (OLD.acknowledged_at IS NULL) <> (NEW.acknowledged_at IS NULL)
          OR (OLD.resolved_at IS NULL) <> (NEW.resolved_at IS NULL))
    EXECUTE FUNCTION ticket_counts_moved();

-- Open tickets carry their SLA columns in the index: the scheduler's candidates and the dashboard's
-- clocks that still run are index-only scans.
DROP INDEX tickets_sla_open;
CREATE INDEX tickets_sla_open ON tickets (oid, severity, created_at)
    INCLUDE (acknowledged_at, resolved_at, mtta_breached_at, mttr_breached_at)
    WHERE status IN ('new', 'acknowledged', 'in_progress', 'escalated');
-- Counts now come from ticket_counts.
DROP INDEX tickets_org_counts;
-- The report reads a period of an org's tickets: the org's created_at index carries the columns it
-- needs, so that is an index-only range scan instead of one heap page per ticket.
DROP INDEX tickets_org_created;
CREATE INDEX tickets_org_created ON tickets (oid, created_at, ticket_number, ticket_id)
    INCLUDE (severity, status, classification, escalated, status_changed_at, acknowledged_at, resolved_at);
