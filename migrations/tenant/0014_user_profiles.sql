-- Custom profile attributes (checked against the tenant's attribute schema on write) and
-- per-user preferences (locale, time zone, notification defaults), both JSON objects.
ALTER TABLE users
    ADD COLUMN attributes  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    ADD COLUMN preferences jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(preferences) = 'object');
CREATE INDEX users_attributes ON users USING gin (attributes jsonb_path_ops);

-- The tenant's JSON Schema for user attributes (one row at most; absent: any object), and the
-- top-level attributes users may edit on themselves.
CREATE TABLE user_attribute_schema (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    schema        jsonb NOT NULL,
    self_editable text[] NOT NULL DEFAULT '{}',
    updated_at    timestamptz NOT NULL DEFAULT now()
);
