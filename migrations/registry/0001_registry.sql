-- Platform registry: physical databases per region and the tenants placed in them.
-- Applied with search_path = admin.

CREATE TABLE database_connections (
    id            uuid PRIMARY KEY,
    region        text NOT NULL CHECK (region IN ('us', 'eu')),
    kind          text NOT NULL CHECK (kind IN ('shared', 'dedicated')),
    -- The server is named by region; its credentials live in configuration, never here.
    host          text NOT NULL,
    port          integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    database_name text NOT NULL CHECK (database_name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (region, database_name)
);

-- Exactly one shared database per region.
CREATE UNIQUE INDEX database_connections_one_shared_per_region
    ON database_connections (region) WHERE kind = 'shared';

CREATE TABLE tenants (
    id             uuid PRIMARY KEY,
    slug           text NOT NULL UNIQUE CHECK (slug ~ '^[a-z][a-z0-9-]{1,38}[a-z0-9]$'),
    display_name   text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    region         text NOT NULL CHECK (region IN ('us', 'eu')),
    isolation      text NOT NULL CHECK (isolation IN ('schema', 'database')),
    status         text NOT NULL CHECK (status IN ('provisioning', 'active', 'suspended', 'deleting')),
    connection_id  uuid NOT NULL REFERENCES database_connections (id),
    schema_name    text NOT NULL CHECK (schema_name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    schema_version bigint NOT NULL DEFAULT 0,
    last_error     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    suspended_at   timestamptz
);

CREATE INDEX tenants_connection ON tenants (connection_id);
