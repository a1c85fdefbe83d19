-- The scheduler asks every second which SLA clocks have run out. Its query reads the open tickets'
-- index one (org, severity) range at a time; with the ticket id in the index that read never
-- visits the table (the id was the one column it had to fetch from each ticket's heap page).
DROP INDEX tickets_sla_open;
CREATE INDEX tickets_sla_open ON tickets (oid, severity, created_at)
    INCLUDE (acknowledged_at, resolved_at, mtta_breached_at, mttr_breached_at, ticket_id)
    WHERE status IN ('new', 'acknowledged', 'in_progress', 'escalated');
