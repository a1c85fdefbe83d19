-- The ExtraHop seed's ticket tracking: a ticket's issue in an external work-tracker, and its link.
ALTER TABLE tickets ADD COLUMN external_ticket_id text, ADD COLUMN external_ticket_url text;
CREATE INDEX tickets_external_ticket_id ON tickets (oid, left(external_ticket_id, 256))
    WHERE external_ticket_id IS NOT NULL;
