-- Feature flags: definitions (neotenant-flags documents), segments, their history, scheduled
-- changes and per-environment SDK keys. `flag_state.generation` increases with every change
-- to a flag or segment: the ETag of bulk evaluations and the version the caches announce.
CREATE TABLE flag_state (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation bigint NOT NULL DEFAULT 0
);
INSERT INTO flag_state (generation) VALUES (0);

CREATE TABLE flags (
    key        text PRIMARY KEY,
    version    integer NOT NULL CHECK (version >= 1),
    definition jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid
);

CREATE TABLE flag_segments (
    key        text PRIMARY KEY,
    version    integer NOT NULL CHECK (version >= 1),
    definition jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid
);

-- Every version of every flag and segment; `definition` is NULL for a deletion.
CREATE TABLE flag_history (
    kind        text NOT NULL CHECK (kind IN ('flag', 'segment')),
    key         text NOT NULL,
    version     integer NOT NULL CHECK (version >= 1),
    definition  jsonb,
    diff        jsonb NOT NULL,
    author_id   uuid,
    author_name text,
    reason      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key, version)
);

-- A change to apply later: a merge patch on the flag's definition at `apply_at`.
CREATE TABLE flag_schedules (
    id              uuid PRIMARY KEY,
    flag_key        text NOT NULL,
    apply_at        timestamptz NOT NULL,
    patch           jsonb NOT NULL,
    reason          text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'applied', 'failed', 'cancelled')),
    applied_version integer,
    error           text,
    created_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX flag_schedules_due ON flag_schedules (apply_at) WHERE status = 'pending';

-- Keys that let an application evaluate the flags of one environment (and nothing else).
CREATE TABLE flag_sdk_keys (
    id          uuid PRIMARY KEY,
    environment text NOT NULL,
    name        text NOT NULL,
    prefix      text NOT NULL,
    digest      bytea NOT NULL UNIQUE,
    created_by  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
