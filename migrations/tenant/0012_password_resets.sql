-- Password-reset tokens of local-mode users: at most one per user (a new request replaces the
-- old one), kept as the SHA-256 of the token (the token itself is only in the mail), with its
-- expiry and the time it was used. Keycloak tenants never write here.
CREATE TABLE password_resets (
    user_id    uuid PRIMARY KEY REFERENCES users (id),
    token_hash bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
