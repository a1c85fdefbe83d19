-- The tokens the service minted, so that an org admin can list and revoke them (by jti) and see
-- their last use. A token is a signed JWT and stays verifiable without this table; what the table
-- adds is revocation, which every API process reads back within seconds.
CREATE TABLE issued_tokens (
    jti           text        PRIMARY KEY,
    subject       text        NOT NULL,
    orgs          text[]      NOT NULL,
    permissions   jsonb       NOT NULL,
    operator      boolean     NOT NULL DEFAULT false,
    issued_at     timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    created_by    text        NOT NULL,
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    revoked_by    text
);
CREATE INDEX issued_tokens_orgs ON issued_tokens USING gin (orgs);
CREATE INDEX issued_tokens_revoked ON issued_tokens (expires_at) WHERE revoked_at IS NOT NULL;
