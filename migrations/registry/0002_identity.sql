-- Where each tenant's users live in Keycloak, and what provisioning created there (so that
-- deleting the tenant removes exactly that).
ALTER TABLE tenants
    ADD COLUMN identity_mode      text NOT NULL DEFAULT 'organization'
        CHECK (identity_mode IN ('realm', 'organization')),
    ADD COLUMN identity_realm     text CHECK (identity_realm ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$'),
    ADD COLUMN identity_org_alias text CHECK (identity_org_alias ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$'),
    ADD COLUMN identity_org_id    text,
    ADD COLUMN identity_linked    boolean NOT NULL DEFAULT false,
    ADD COLUMN identity_created   text[] NOT NULL DEFAULT '{}',
    ADD COLUMN identity_ready     boolean NOT NULL DEFAULT false;
