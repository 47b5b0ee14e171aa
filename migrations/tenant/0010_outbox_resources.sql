-- The outbox: events written in the same transaction as the change they describe. Consumers
-- read in (txid, seq) order and only below the oldest running transaction
-- (pg_snapshot_xmin), so a row committed late can never be skipped.
CREATE TABLE outbox (
    seq            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid           bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    topic          text NOT NULL CHECK (topic ~ '^[a-z][a-z0-9_.]{0,99}$'),
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    payload        jsonb NOT NULL DEFAULT '{}',
    at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_order ON outbox (txid, seq);

-- Resource types: a JSON Schema for the data and the fields search, filters and sorts use.
CREATE TABLE resource_types (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    title         text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    description   text NOT NULL DEFAULT '',
    version       integer NOT NULL DEFAULT 1,
    schema        jsonb NOT NULL,
    searchable    text[] NOT NULL DEFAULT '{}',
    filterable    text[] NOT NULL DEFAULT '{}',
    sortable      text[] NOT NULL DEFAULT '{}',
    relationships jsonb NOT NULL DEFAULT '[]',
    source        text NOT NULL DEFAULT 'declarative' CHECK (source IN ('declarative', 'plugin')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Every version of every type definition, for history and audits.
CREATE TABLE resource_type_versions (
    name       text NOT NULL REFERENCES resource_types (name) ON DELETE CASCADE,
    version    integer NOT NULL,
    definition jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

-- Resources: the current state. Soft-deleted rows keep their data until purged; the
-- partial indexes cover live rows only.
CREATE TABLE resources (
    id          uuid PRIMARY KEY,
    type        text NOT NULL REFERENCES resource_types (name),
    data        jsonb NOT NULL,
    tags        text[] NOT NULL DEFAULT '{}',
    category    text CHECK (char_length(category) BETWEEN 1 AND 100),
    owner_id    uuid NOT NULL,
    team_id     uuid REFERENCES teams (id) ON DELETE SET NULL,
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX resources_live ON resources (type, id) WHERE deleted_at IS NULL;
CREATE INDEX resources_deleted ON resources (type, id) WHERE deleted_at IS NOT NULL;
CREATE INDEX resources_owner ON resources (owner_id, type, id) WHERE deleted_at IS NULL;
CREATE INDEX resources_team ON resources (team_id, type, id) WHERE deleted_at IS NULL;
CREATE INDEX resources_tags ON resources USING gin (tags) WHERE deleted_at IS NULL;
CREATE INDEX resources_data ON resources USING gin (data jsonb_path_ops) WHERE deleted_at IS NULL;

-- One row per version of a resource: the full state after each change.
CREATE TABLE resource_versions (
    resource_id uuid NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    version     integer NOT NULL,
    data        jsonb NOT NULL,
    tags        text[] NOT NULL,
    category    text,
    deleted     boolean NOT NULL DEFAULT false,
    change      text NOT NULL,
    actor_id    text,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resource_id, version)
);

-- Per-resource shares with a user or a team (and the teams below it).
CREATE TABLE resource_shares (
    id          uuid PRIMARY KEY,
    resource_id uuid NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    user_id     uuid,
    team_id     uuid REFERENCES teams (id) ON DELETE CASCADE,
    access      text NOT NULL CHECK (access IN ('read', 'write')),
    created_by  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((user_id IS NULL) <> (team_id IS NULL))
);
CREATE UNIQUE INDEX resource_shares_user ON resource_shares (resource_id, user_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX resource_shares_team ON resource_shares (resource_id, team_id) WHERE team_id IS NOT NULL;
CREATE INDEX resource_shares_to_user ON resource_shares (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX resource_shares_to_team ON resource_shares (team_id) WHERE team_id IS NOT NULL;

-- Typed, directional links between resources; the kind's rule (refuse, cascade, detach)
-- decides what deleting the target does.
CREATE TABLE resource_links (
    from_id    uuid NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,62}$'),
    to_id      uuid NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    created_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (from_id, kind, to_id),
    CHECK (from_id <> to_id)
);
CREATE INDEX resource_links_to ON resource_links (to_id, kind);

-- Resources join the permission catalog's platform part in code; the seeded roles get
-- their share of them (roles still named as their template, i.e. not re-keyed copies).
UPDATE roles SET permissions = permissions || ARRAY['resources.*.tenant', 'resource_types.*.tenant']
 WHERE key = 'admin' AND template = 'admin';
UPDATE roles SET permissions = permissions || ARRAY['resources.read.tenant', 'resources.create.own',
        'resources.update.own', 'resources.delete.own', 'resources.share.own', 'resource_types.read.tenant']
 WHERE key = 'member' AND template = 'member';
UPDATE roles SET permissions = permissions || ARRAY['resources.read.tenant', 'resource_types.read.tenant']
 WHERE key = 'viewer' AND template = 'viewer';
