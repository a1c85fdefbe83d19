-- A btree entry holds at most 2,704 bytes. An IOC value may have 2,048 characters and a grouping
-- key joins detection fields of up to 1,024 each: in a script of three or four bytes a character
-- (CJK file paths, user names) such a value did not fit, and the row was refused. For an IOC the
-- refusal came in the projector, after the event was stored, and stopped it at that event for
-- good. These indexes hold the first 256 characters instead (at most 1 KiB); the lookups compare
-- that prefix through the index and then the whole value.
DROP INDEX ticket_entities_search;
DROP INDEX ticket_entities_value;
CREATE INDEX ticket_entities_value ON ticket_entities (oid, left(entity_value, 256));

DROP INDEX grouping_index_lookup;
CREATE INDEX grouping_index_lookup ON grouping_index (oid, left(group_key, 256), first_detected_at) WHERE open;
