-- The queue's `search` is a substring of the category or the hostname (ILIKE '%x%'): no btree can
-- serve it, so it read every ticket of the org. Trigram indexes make it read only the matches,
-- whatever the org's size. pg_trgm is a trusted extension (PostgreSQL 13+): the database owner
-- may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX tickets_detection_cat_trgm ON tickets USING gin (detection_cat gin_trgm_ops);
CREATE INDEX tickets_hostname_trgm ON tickets USING gin (hostname gin_trgm_ops);
