-- Tenant settings: the tenant's own values (defaults are the platform's and are not stored)
-- and its custom settings' JSON Schema, as one versioned state. Every change is a row of
-- settings_versions with its author and its diff; `settings` holds the newest state.
CREATE TABLE settings (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version    integer NOT NULL CHECK (version >= 1),
    state      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid
);

CREATE TABLE settings_versions (
    version     integer PRIMARY KEY CHECK (version >= 1),
    state       jsonb NOT NULL,
    diff        jsonb NOT NULL,
    author_id   uuid,
    author_name text,
    reason      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now()
);

-- The branding logo: the original's digest as ETag and a bounded WebP rendition.
CREATE TABLE settings_logo (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    etag         text NOT NULL,
    image        bytea NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Version 1 carries what the invitation policy and the audit retention held so far; from
-- here on the settings are where the system reads them.
WITH migrated AS (
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'invitations', (SELECT jsonb_build_object(
                            'expiry_hours', p.expiry_hours,
                            'allowed_domains', to_jsonb(p.allowed_domains))
                        FROM invitation_policy p),
        'compliance', (SELECT CASE WHEN a.retention_days IS NULL THEN NULL
                              ELSE jsonb_build_object('audit_retention_days', a.retention_days) END
                       FROM audit_settings a LIMIT 1)
    )) AS v
)
INSERT INTO settings (version, state)
SELECT 1, jsonb_build_object('values', v, 'custom_schema', NULL) FROM migrated;

INSERT INTO settings_versions (version, state, diff, reason)
SELECT 1, state,
       CASE WHEN state->'values' = '{}'::jsonb THEN '[]'::jsonb
            ELSE jsonb_build_array(jsonb_build_object('path', '/values', 'to', state->'values')) END,
       'initial'
FROM settings;

DROP TABLE invitation_policy;
ALTER TABLE audit_settings DROP COLUMN retention_days;
