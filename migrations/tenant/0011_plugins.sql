-- Installed plugins: one installation per plugin name, pinned to a version and its content
-- hash, with the capabilities a tenant admin granted and the failure mode of each hook.
CREATE TABLE plugin_installs (
    name             text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
    plugin_id        uuid NOT NULL,
    source           text NOT NULL CHECK (source IN ('tenant', 'marketplace')),
    kind             text NOT NULL CHECK (kind IN ('resource-type', 'integration')),
    version          text NOT NULL,
    hash             text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    previous_version text,
    previous_hash    text,
    grants           jsonb NOT NULL,
    settings         jsonb NOT NULL DEFAULT '{}',
    -- Write-only: given to the plugin through its configuration, never shown or audited.
    secrets          jsonb NOT NULL DEFAULT '{}',
    failure_modes    jsonb NOT NULL,
    events           text[] NOT NULL DEFAULT '{}',
    type_name        text UNIQUE,
    enabled          boolean NOT NULL DEFAULT true,
    disabled_reason  text,
    -- Integrations: the outbox position delivered up to, the retry state of the next event
    -- and a short lease so that one instance delivers at a time.
    cursor_txid      bigint NOT NULL DEFAULT 0,
    cursor_seq       bigint NOT NULL DEFAULT 0,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    last_error       text,
    lease_until      timestamptz,
    installed_at     timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE resource_types ADD COLUMN plugin text REFERENCES plugin_installs (name);

CREATE TABLE plugin_kv (
    plugin text NOT NULL REFERENCES plugin_installs (name) ON DELETE CASCADE,
    key    text NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 256),
    value  bytea NOT NULL,
    PRIMARY KEY (plugin, key)
);

-- Failed plugin calls: what failed, how, and whether the write went ahead (fail-open).
CREATE TABLE plugin_failures (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plugin    text NOT NULL,
    hook      text NOT NULL,
    code      text NOT NULL,
    message   text NOT NULL,
    subject   text,
    fail_open boolean NOT NULL DEFAULT false,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plugin_failures_plugin ON plugin_failures (plugin, id DESC);

-- Events an integration could not handle after every retry.
CREATE TABLE plugin_dead_letters (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plugin    text NOT NULL,
    event_seq bigint NOT NULL,
    topic     text NOT NULL,
    subject   text NOT NULL,
    payload   jsonb NOT NULL,
    error     text NOT NULL,
    attempts  integer NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plugin_dead_letters_plugin ON plugin_dead_letters (plugin, id DESC);
