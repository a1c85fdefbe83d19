-- SLA and reporting columns of the tickets read model, and the indexes their queries use.
ALTER TABLE tickets ADD COLUMN status_changed_at timestamptz;
ALTER TABLE tickets ADD COLUMN mtta_breached_at timestamptz;
ALTER TABLE tickets ADD COLUMN mttr_breached_at timestamptz;
ALTER TABLE tickets ADD COLUMN escalated boolean NOT NULL DEFAULT false;

-- The scheduler's candidates: tickets whose clocks still run.
CREATE INDEX tickets_sla_open ON tickets (oid, severity, created_at)
    WHERE status IN ('new', 'acknowledged', 'in_progress', 'escalated');
-- Auto-close candidates.
CREATE INDEX tickets_resolved ON tickets (oid, status_changed_at) WHERE status = 'resolved';
-- Dashboard counts per org (index-only scans on small tuples).
CREATE INDEX tickets_org_counts ON tickets (oid, status, severity);
