-- API keys: shown once at creation, stored as a keyed hash (HMAC-SHA256 with a server-side
-- key); the visible prefix identifies the key in lists and logs.
CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    name          text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    prefix        text NOT NULL UNIQUE,
    secret_hash   bytea NOT NULL,
    owner_id      uuid NOT NULL REFERENCES users (id),
    scopes        text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

CREATE INDEX api_keys_owner ON api_keys (owner_id) WHERE revoked_at IS NULL;
