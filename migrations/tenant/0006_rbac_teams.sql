-- RBAC: roles with a hierarchy, role assignments, per-user grants and denies; teams with a
-- tree, members, team roles, shares; and the audit log every change writes to.

CREATE TABLE roles (
    id          uuid PRIMARY KEY,
    key         text NOT NULL UNIQUE CHECK (key ~ '^[a-z][a-z0-9_-]{0,62}$'),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 1000),
    permissions text[] NOT NULL DEFAULT '{}',
    -- The platform template this role was copied from, if any.
    template    text,
    -- Held by every active user of the tenant.
    is_default  boolean NOT NULL DEFAULT false,
    -- The owner role: cannot be edited or deleted.
    protected   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A role inherits every permission of its parents (transitively). Cycles are refused by the
-- service under a per-tenant lock.
CREATE TABLE role_parents (
    role_id   uuid NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    parent_id uuid NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (role_id, parent_id),
    CHECK (role_id <> parent_id)
);
CREATE INDEX role_parents_parent ON role_parents (parent_id);

CREATE TABLE user_roles (
    user_id    uuid NOT NULL REFERENCES users (id),
    role_id    uuid NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    granted_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    PRIMARY KEY (user_id, role_id)
);
CREATE INDEX user_roles_role ON user_roles (role_id);

-- Custom per-user permissions: `allow` adds, `deny` caps (a deny beats any grant).
CREATE TABLE user_grants (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id),
    permission text NOT NULL CHECK (char_length(permission) BETWEEN 5 AND 200),
    effect     text NOT NULL CHECK (effect IN ('allow', 'deny')),
    reason     text NOT NULL DEFAULT '' CHECK (char_length(reason) <= 500),
    granted_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    UNIQUE (user_id, permission, effect)
);

-- Resource types registered after the platform's own (resource types, plugins) extend the
-- permission catalog here.
CREATE TABLE permission_resources (
    resource    text PRIMARY KEY CHECK (resource ~ '^[a-z][a-z0-9_]{0,62}$'),
    actions     text[] NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Teams form a tree; `path` is the ids from the root down to the team itself, so a subtree is
-- `path @> ARRAY[id]` (GIN) and the ancestors are `id = ANY(path)`, at any depth.
CREATE TABLE teams (
    id          uuid PRIMARY KEY,
    parent_id   uuid REFERENCES teams (id),
    path        uuid[] NOT NULL,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 1000),
    template    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (parent_id, name),
    CHECK (path[array_length(path, 1)] = id)
);
CREATE INDEX teams_path ON teams USING gin (path);
CREATE INDEX teams_parent ON teams (parent_id);

CREATE TABLE team_members (
    team_id   uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id   uuid NOT NULL REFERENCES users (id),
    team_role text NOT NULL DEFAULT 'member' CHECK (team_role ~ '^[a-z][a-z0-9_-]{0,31}$'),
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON team_members (user_id);

-- Roles granted to a team apply to the members of that team and of every team below it.
CREATE TABLE team_roles (
    team_id    uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    role_id    uuid NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    granted_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, role_id)
);
CREATE INDEX team_roles_role ON team_roles (role_id);

-- Joins and leaves, for growth analytics (kept when a team is deleted).
CREATE TABLE team_membership_log (
    id      bigserial PRIMARY KEY,
    team_id uuid NOT NULL,
    user_id uuid NOT NULL,
    change  text NOT NULL CHECK (change IN ('joined', 'left')),
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX team_membership_log_team ON team_membership_log (team_id, at);

-- A team shares access to one of its resources with another team.
CREATE TABLE team_shares (
    id            uuid PRIMARY KEY,
    team_id       uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    shared_with   uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    resource_type text NOT NULL CHECK (resource_type ~ '^[a-z][a-z0-9_]{0,62}$'),
    resource_id   text NOT NULL CHECK (char_length(resource_id) BETWEEN 1 AND 200),
    access        text NOT NULL CHECK (access IN ('read', 'write')),
    created_by    uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (resource_type, resource_id, shared_with),
    CHECK (team_id <> shared_with)
);
CREATE INDEX team_shares_with ON team_shares (shared_with, resource_type);

-- Tenant-defined team templates (the platform's own are in code).
CREATE TABLE team_templates (
    key         text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_-]{0,62}$'),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    description text NOT NULL DEFAULT '',
    spec        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The audit log: one row per change, written in the change's own transaction.
CREATE TABLE audit_log (
    id          uuid PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor_type  text NOT NULL CHECK (actor_type IN ('user', 'api_key', 'system', 'platform')),
    actor_id    text,
    action      text NOT NULL CHECK (char_length(action) BETWEEN 1 AND 100),
    target_type text NOT NULL,
    target_id   text,
    data        jsonb NOT NULL DEFAULT '{}',
    request_id  text,
    ip          text,
    user_agent  text
);
CREATE INDEX audit_log_at ON audit_log (at, id);
CREATE INDEX audit_log_target ON audit_log (target_type, target_id, at);
