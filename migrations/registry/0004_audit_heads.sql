-- The newest signed checkpoint of each tenant's audit chain, kept outside the tenant's own
-- database: truncating a tenant's log (entries and checkpoints together) cannot hide from it.
CREATE TABLE audit_heads (
    tenant_id  uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    seq        bigint NOT NULL,
    hash       bytea NOT NULL,
    signature  bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
