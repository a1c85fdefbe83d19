-- Retention asks once a minute which resolved or closed tickets are past their org's retention.
-- No index held those tickets by the time they settled, so each pass read every resolved and
-- closed ticket (all the history but the open ones: ~240 ms and 24,000 buffers at 1,000,000
-- tickets, even with nothing due). This one gives each org's due tickets as one range.
CREATE INDEX tickets_retention ON tickets (oid, status_changed_at) INCLUDE (ticket_id)
    WHERE status IN ('resolved', 'closed');
