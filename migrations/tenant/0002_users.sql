-- The tenant's users as this API knows them; `subject` is the identity provider's user id
-- (the token's `sub`). Rows are created just in time on a user's first authenticated request.
CREATE TABLE users (
    id           uuid PRIMARY KEY,
    subject      text NOT NULL UNIQUE CHECK (char_length(subject) BETWEEN 1 AND 255),
    username     text,
    email        text,
    display_name text,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deactivated', 'deleted')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX users_active_email ON users (lower(email)) WHERE status = 'active';
