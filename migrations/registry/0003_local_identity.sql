-- A third identity mode: `local` tenants keep their users' passwords here and get tokens
-- signed by the platform, without Keycloak.
ALTER TABLE tenants DROP CONSTRAINT tenants_identity_mode_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_identity_mode_check
    CHECK (identity_mode IN ('realm', 'organization', 'local'));
