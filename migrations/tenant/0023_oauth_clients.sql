-- OAuth2 machine clients (client-credentials grant): created in the tenant's Keycloak realm,
-- acting as their maker narrowed to their scopes. The secret lives only in Keycloak.
CREATE TABLE oauth_clients (
    id          uuid PRIMARY KEY,
    -- Keycloak's `clientId` (`ntc-<slug>-<hex>`), what tokens carry as `azp`.
    client_id   text NOT NULL UNIQUE,
    -- Keycloak's internal id of the client.
    keycloak_id text NOT NULL,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    owner_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX oauth_clients_owner ON oauth_clients (owner_id) WHERE revoked_at IS NULL;
