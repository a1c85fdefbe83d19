-- Each shard of the current layout and its newest position (0 while it has none): what every
-- "is this reader behind?" asks (the followers' wake, a reshard's wait, readiness, the bench),
-- in one place. An index probe per shard on (shard, position).
CREATE VIEW log_shard_heads AS
SELECT s::smallint AS shard,
       coalesce((SELECT max(e.position) FROM events e WHERE e.shard = s), 0) AS head
FROM generate_series(0, (SELECT shards FROM log_layout) - 1) AS s;
