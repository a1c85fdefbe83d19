-- Duplicates are counted, not only dropped. The dedup index keeps where each detection id was
-- first read and the last offset counted for it, so that a redelivery of the same message (a
-- crash, a replay of the topic by a new consumer group) counts nothing, while a re-send does.
ALTER TABLE detection_index
    ADD COLUMN first_topic text, ADD COLUMN first_partition integer, ADD COLUMN last_offset bigint;
ALTER TABLE tickets ADD COLUMN duplicate_count integer NOT NULL DEFAULT 0, ADD COLUMN last_seen_at timestamptz;
CREATE INDEX tickets_org_duplicates ON tickets (oid, duplicate_count, ticket_number, ticket_id);
