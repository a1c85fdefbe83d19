-- A redelivered message is told from a re-send by how far the ingest had read its partition, one
-- row per partition written with each batch, instead of by the last offset counted per detection
-- id (0024), which cost every re-send a write of its own and was blind to a re-send read on
-- another partition when the topic was replayed. The dedup index keeps where each id was first read.
CREATE TABLE ingest_read_offsets (
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    read_offset  bigint  NOT NULL,  -- every message up to it has been ingested
    PRIMARY KEY (topic, partition)
);
INSERT INTO ingest_read_offsets (topic, partition, read_offset)
    SELECT first_topic, first_partition, max(last_offset) FROM detection_index
    WHERE first_topic IS NOT NULL AND first_partition IS NOT NULL AND last_offset IS NOT NULL
    GROUP BY first_topic, first_partition;
ALTER TABLE detection_index RENAME COLUMN last_offset TO first_offset;
