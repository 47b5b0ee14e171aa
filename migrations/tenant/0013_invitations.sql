-- Invitations: who was invited (the address as given; compared lowercased), into which roles
-- and teams, by whom, and where the invitation is in its life (pending → sent → opened →
-- accepted | expired | revoked). The token is in the mail only; `token_hash` is its SHA-256,
-- set when a mail is sent (NULL before the first mail and after acceptance or revocation, so
-- no token of a closed invitation can match). Mail delivery is a queue on the same rows:
-- `mail_due_at` is when the next attempt may start (NULL when nothing is to be sent).
CREATE TABLE invitations (
    id            uuid PRIMARY KEY,
    email         text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    roles         text[] NOT NULL DEFAULT '{}',
    teams         uuid[] NOT NULL DEFAULT '{}',
    message       text CHECK (length(message) <= 2000),
    locale        text NOT NULL DEFAULT 'en',
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'sent', 'opened', 'accepted', 'expired', 'revoked')),
    token_hash    bytea UNIQUE CHECK (octet_length(token_hash) = 32),
    invited_by    uuid REFERENCES users (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    sent_at       timestamptz,
    opened_at     timestamptz,
    accepted_at   timestamptz,
    accepted_by   uuid REFERENCES users (id),
    revoked_at    timestamptz,
    mail_status   text NOT NULL DEFAULT 'queued' CHECK (mail_status IN ('queued', 'sent', 'failed')),
    mail_attempts integer NOT NULL DEFAULT 0,
    mail_error    text,
    mail_due_at   timestamptz
);
-- At most one open invitation per address.
CREATE UNIQUE INDEX invitations_open_email ON invitations (lower(email))
    WHERE status IN ('pending', 'sent', 'opened');
CREATE INDEX invitations_by_created ON invitations (created_at, id);
CREATE INDEX invitations_by_inviter ON invitations (invited_by, created_at);
CREATE INDEX invitations_mail_due ON invitations (mail_due_at) WHERE mail_due_at IS NOT NULL;
CREATE INDEX invitations_open_expiry ON invitations (expires_at)
    WHERE status IN ('pending', 'sent', 'opened');

-- Mail templates per locale: subject, text and HTML bodies (minijinja; only the documented
-- variables; the HTML body is escaped).
CREATE TABLE invitation_templates (
    locale     text PRIMARY KEY CHECK (locale ~ '^[a-z]{2,3}(-[A-Z]{2})?$'),
    subject    text NOT NULL CHECK (length(subject) <= 500),
    text_body  text NOT NULL CHECK (length(text_body) <= 20000),
    html_body  text CHECK (length(html_body) <= 50000),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid REFERENCES users (id)
);

-- The tenant's invitation policy (one row at most; absent means the platform's defaults).
CREATE TABLE invitation_policy (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    expiry_hours    integer NOT NULL CHECK (expiry_hours BETWEEN 1 AND 2160),
    allowed_domains text[] NOT NULL DEFAULT '{}',
    updated_at      timestamptz NOT NULL DEFAULT now()
);
