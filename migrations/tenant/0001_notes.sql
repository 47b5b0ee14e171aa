-- Tenant template: applied to every tenant schema with search_path = that schema.
-- Unqualified names only: the runner decides which schema they land in.

CREATE TABLE notes (
    id          uuid PRIMARY KEY,
    title       text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    body        text NOT NULL DEFAULT '' CHECK (char_length(body) <= 20000),
    external_id text UNIQUE CHECK (char_length(external_id) BETWEEN 1 AND 100),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
