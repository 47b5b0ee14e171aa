-- Plugins: components by content hash, plugins (a tenant's private uploads, or the
-- marketplace's when owner_tenant is NULL) and their immutable versions.
CREATE TABLE plugin_components (
    hash       text PRIMARY KEY CHECK (hash ~ '^[0-9a-f]{64}$'),
    bytes      bytea NOT NULL,
    size       integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE plugins (
    id           uuid PRIMARY KEY,
    owner_tenant uuid REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
    kind         text NOT NULL CHECK (kind IN ('resource-type', 'integration')),
    publisher    text NOT NULL CHECK (char_length(publisher) BETWEEN 1 AND 100),
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX plugins_marketplace_name ON plugins (name) WHERE owner_tenant IS NULL;
CREATE UNIQUE INDEX plugins_tenant_name ON plugins (owner_tenant, name) WHERE owner_tenant IS NOT NULL;

CREATE TABLE plugin_versions (
    plugin_id    uuid NOT NULL REFERENCES plugins (id) ON DELETE CASCADE,
    version      text NOT NULL CHECK (version ~ '^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$'),
    hash         text NOT NULL REFERENCES plugin_components (hash),
    manifest     jsonb NOT NULL,
    -- The type a resource-type plugin describes (read once, at upload).
    type_info    jsonb,
    published_by text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plugin_id, version)
);
CREATE INDEX plugin_versions_hash ON plugin_versions (hash);
