-- Trends (issue 33): tickets closed per day or week, for each org, read from one index range
-- of the closed (live and archived) instead of every ticket of the org.
CREATE INDEX tickets_org_closed ON tickets (oid, closed_at) WHERE closed_at IS NOT NULL;
CREATE INDEX archived_tickets_org_closed ON archived_tickets (oid, closed_at) WHERE closed_at IS NOT NULL;
