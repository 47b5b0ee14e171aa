-- Passwords of local-mode tenants' users (argon2id PHC strings); Keycloak tenants have none.
CREATE TABLE credentials (
    user_id       uuid PRIMARY KEY REFERENCES users (id),
    password_hash text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
