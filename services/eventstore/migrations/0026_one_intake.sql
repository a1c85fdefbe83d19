-- One intake for every door (issue 30).
-- The digest of what a known detection last said of itself, kept with its claim, so that an
-- update (ExtraHop's trigger fires on every change) is told from a re-send without reading the
-- ticket. NULL for detections that are never updated in place (LimaCharlie, manual).
ALTER TABLE detection_index ADD COLUMN content_digest bigint;

-- What an ExtraHop detection says of itself, over Kafka and the create-issue door alike.
ALTER TABLE ticket_detections
    ADD COLUMN title       text,
    ADD COLUMN description text,
    ADD COLUMN tags        text[] NOT NULL DEFAULT '{}';

-- An operator may re-subscribe a purged org: only data from after the purge flows again.
ALTER TABLE org_tombstones
    ADD COLUMN resubscribed_at timestamptz,
    ADD COLUMN resubscribed_by text;

-- A purge revokes the credentials that name only its org (kept, listed as revoked) and takes the
-- org out of the others: a token's orgs are checked against this table on every request.
ALTER TABLE api_keys ADD COLUMN revoked_by text;
ALTER TABLE issued_tokens ADD COLUMN lost_orgs text[] NOT NULL DEFAULT '{}';
