-- Single sign-on (issue 34): the console's sessions, kept server-side so that an admin can list
-- and revoke them and every API process refuses a revoked one at its next request. The cookie
-- holds a random value; only its SHA-256 is stored (a copy of this table signs nobody in).
CREATE TABLE console_sessions (
    session_id   text        PRIMARY KEY,        -- how it is listed and revoked (not the cookie)
    digest       bytea       NOT NULL UNIQUE,    -- sha256 of the cookie's value
    subject      text        NOT NULL,           -- the e-mail (or the provider's subject): events' `by`
    issuer       text        NOT NULL,
    provider_sub text        NOT NULL,
    groups       text[]      NOT NULL,           -- as the provider said at sign-in
    csrf_token   text        NOT NULL,           -- sent back in X-CSRF-Token by every write
    id_token     text,                           -- the hint for the provider's sign-out
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,           -- the absolute timeout
    revoked_at   timestamptz,
    revoked_by   text
);
CREATE INDEX console_sessions_live ON console_sessions (expires_at) WHERE revoked_at IS NULL;

-- A sign-in under way: what the callback must find (state, single use), check (nonce) and send
-- (the PKCE verifier). Only the state's digest is kept, and a row lives ten minutes at most.
CREATE TABLE oidc_logins (
    state_digest  bytea       PRIMARY KEY,
    nonce         text        NOT NULL,
    code_verifier text        NOT NULL,
    return_to     text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
