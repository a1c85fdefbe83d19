-- Log shards (issue 36): an event's shard is its org's (ticketing_shard_of), so that appends to
-- different shards take different locks and readers follow each shard with a checkpoint of its
-- own. One shard (the default) is the single log as it always was: shard 0, under the lock the
-- store always took. Adding the column with a constant default rewrites nothing.
ALTER TABLE events ADD COLUMN shard smallint NOT NULL DEFAULT 0;
CREATE INDEX events_shard_position ON events (shard, position);

-- How many shards new appends are spread over: one row, changed only by `reshard`, which holds
-- the layout lock exclusively (appends hold it shared) and waits for every reader.
CREATE TABLE log_layout (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    shards      smallint NOT NULL CHECK (shards BETWEEN 1 AND 256),
    changed_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO log_layout (shards) VALUES (1);

-- A reader's position in each shard.
ALTER TABLE subscription_checkpoints ADD COLUMN shard smallint NOT NULL DEFAULT 0;
ALTER TABLE subscription_checkpoints DROP CONSTRAINT subscription_checkpoints_pkey;
ALTER TABLE subscription_checkpoints ADD PRIMARY KEY (name, shard);

-- The rule, in one place: the first 32 bits of the org id's MD5, modulo the shard count (stable
-- across PostgreSQL versions and easy to compute anywhere, as a placement of orgs needs).
-- Events without an org are shard 0.
CREATE FUNCTION ticketing_shard_of(p_oid text, p_shards integer) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (CASE WHEN p_shards <= 1 OR p_oid IS NULL THEN 0
                 ELSE ('x' || substr(md5(p_oid), 1, 8))::bit(32)::bigint % p_shards END)::smallint
$$;

-- An append's locks, taken before its first row: the layout lock shared (a reshard waits for
-- appends in flight, and they for it), then each shard's lock, in ascending order (no deadlock
-- between appends that write several shards). Shard 0's is the one-key lock the single log took
-- (p_append), so a process of the release before excludes this one's appends during an upgrade;
-- the others are two-key locks (p_space, shard), apart from every one-key lock. Returns each
-- org's shard, in the order given.
CREATE FUNCTION ticketing_append_locks(p_oids text[], p_layout bigint, p_append bigint, p_space integer)
RETURNS smallint[] LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    s smallint;
    shards smallint[];
BEGIN
    PERFORM pg_advisory_xact_lock_shared(p_layout);
    SELECT l.shards INTO n FROM log_layout l;
    shards := ARRAY(SELECT ticketing_shard_of(o, n) FROM unnest(p_oids) WITH ORDINALITY AS u(o, i) ORDER BY i);
    FOR s IN SELECT DISTINCT x FROM unnest(shards) AS x ORDER BY x LOOP
        IF s = 0 THEN
            PERFORM pg_advisory_xact_lock(p_append);
        ELSE
            PERFORM pg_advisory_xact_lock(p_space, s);
        END IF;
    END LOOP;
    RETURN shards;
END $$;
