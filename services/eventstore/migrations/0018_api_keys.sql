-- Org API keys: what an integration (an ExtraHop ODS target, a work-tracker's script) presents
-- instead of a user's token. One org each, narrow permissions, stored as a SHA-256 of the secret
-- (the secret is 256 random bits: a slow hash would add nothing), revocable, with its last use.
CREATE TABLE api_keys (
    key_id        text        PRIMARY KEY,
    oid           text        NOT NULL,
    name          text        NOT NULL,
    secret_sha256 bytea       NOT NULL,
    permissions   text[]      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text        NOT NULL,
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    UNIQUE (oid, name)
);
