-- Notifications: tenant categories (the platform's are in code; a row with a platform key
-- overrides its channels, digest, throttle and quiet-hours behaviour), templates per category,
-- channel and locale, per-user preferences and contacts, the notifications sent, one delivery
-- per recipient and channel with its attempts, the in-app inbox with its per-user counter and
-- event stream, digests, event rules and the send API's idempotency keys.

CREATE TABLE notification_categories (
    key         text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 1000),
    channels    text[] NOT NULL,
    critical    boolean NOT NULL DEFAULT false,
    quiet_hours text NOT NULL DEFAULT 'hold' CHECK (quiet_hours IN ('hold', 'skip')),
    variables   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(variables) = 'object'),
    digest      jsonb,
    throttle    jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notification_templates (
    category   text NOT NULL,
    channel    text NOT NULL CHECK (channel IN ('email', 'in_app', 'sms', 'push')),
    locale     text NOT NULL CHECK (char_length(locale) BETWEEN 2 AND 20),
    subject    text NOT NULL DEFAULT '',
    body       text NOT NULL,
    html       text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by uuid,
    PRIMARY KEY (category, channel, locale)
);

-- One row per user, category and channel the user chose for themselves.
CREATE TABLE notification_preferences (
    user_id  uuid NOT NULL,
    category text NOT NULL,
    channel  text NOT NULL CHECK (channel IN ('email', 'in_app', 'sms', 'push')),
    enabled  boolean NOT NULL,
    PRIMARY KEY (user_id, category, channel)
);

-- A user's quiet hours and the addresses of channels that are not their account's email.
CREATE TABLE notification_user_settings (
    user_id     uuid PRIMARY KEY,
    quiet_hours jsonb,
    phone       text CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    push_tokens text[] NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notifications (
    id           uuid PRIMARY KEY,
    category     text NOT NULL,
    data         jsonb NOT NULL,
    audience     jsonb NOT NULL,
    channels     text[],
    source       text NOT NULL,
    created_by   uuid,
    send_at      timestamptz NOT NULL DEFAULT now(),
    -- Expansion into deliveries walks the audience by user id; `expand_after` is its cursor.
    expand_after uuid,
    expanded_at  timestamptz,
    recipients   integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_pending ON notifications (send_at) WHERE expanded_at IS NULL;
CREATE INDEX notifications_created ON notifications (created_at);

CREATE TABLE notification_digests (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL,
    category   text NOT NULL,
    channel    text NOT NULL,
    status     text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'sent', 'failed')),
    due_at     timestamptz NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE UNIQUE INDEX notification_digests_open ON notification_digests (user_id, category, channel)
    WHERE status = 'open';
CREATE INDEX notification_digests_due ON notification_digests (due_at) WHERE status = 'open';

CREATE TABLE notification_deliveries (
    id              uuid PRIMARY KEY,
    notification_id uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('email', 'in_app', 'sms', 'push')),
    category        text NOT NULL,
    status          text NOT NULL CHECK (status IN ('queued', 'held', 'digested', 'sent', 'delivered',
                                                    'failed', 'bounced', 'skipped', 'throttled')),
    reason          text,
    attempts        integer NOT NULL DEFAULT 0,
    provider        text,
    -- When the worker takes it next (queued and held rows, and claimed rows' lease end).
    due_at          timestamptz,
    digest_id       uuid REFERENCES notification_digests (id),
    throttle_key    text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    delivered_at    timestamptz,
    failed_at       timestamptz,
    UNIQUE (notification_id, user_id, channel)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (due_at)
    WHERE status IN ('queued', 'held');
CREATE INDEX notification_deliveries_recent ON notification_deliveries (user_id, category, created_at);
CREATE INDEX notification_deliveries_digest ON notification_deliveries (digest_id) WHERE digest_id IS NOT NULL;
CREATE INDEX notification_deliveries_created ON notification_deliveries (created_at);

CREATE TABLE notification_attempts (
    delivery_id uuid NOT NULL,
    n           integer NOT NULL,
    provider    text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    ok          boolean NOT NULL,
    error       text,
    PRIMARY KEY (delivery_id, n, provider)
);

-- The in-app channel.
CREATE TABLE inbox_items (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL,
    notification_id uuid NOT NULL,
    category        text NOT NULL,
    title           text NOT NULL,
    body            text NOT NULL,
    data            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    read_at         timestamptz,
    archived_at     timestamptz,
    UNIQUE (notification_id, user_id)
);
CREATE INDEX inbox_items_user ON inbox_items (user_id, id DESC);

-- A user's unread count; its row lock orders one user's inbox changes, so the events below
-- carry exact counts in commit order.
CREATE TABLE inbox_counters (
    user_id uuid PRIMARY KEY,
    unread  integer NOT NULL DEFAULT 0 CHECK (unread >= 0)
);

CREATE TABLE inbox_events (
    seq     bigserial PRIMARY KEY,
    user_id uuid NOT NULL,
    kind    text NOT NULL,
    item_id uuid,
    unread  integer NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbox_events_user ON inbox_events (user_id, seq);

-- Outbox topics mapped to notifications.
CREATE TABLE notification_rules (
    id         uuid PRIMARY KEY,
    topic      text NOT NULL CHECK (char_length(topic) BETWEEN 1 AND 200),
    category   text NOT NULL,
    audience   jsonb NOT NULL,
    data       jsonb NOT NULL DEFAULT '{}',
    enabled    boolean NOT NULL DEFAULT true,
    created_by uuid,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notification_rules_topic ON notification_rules (topic) WHERE enabled;

-- The event-rule consumer's outbox cursor, moved with the notifications it creates.
CREATE TABLE notification_rule_cursor (
    id   integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    txid bigint NOT NULL DEFAULT 0,
    seq  bigint NOT NULL DEFAULT 0
);
INSERT INTO notification_rule_cursor DEFAULT VALUES;

-- Successful answers of idempotent requests, kept 24 hours.
CREATE TABLE idempotency_keys (
    scope        text NOT NULL,
    key          text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    request_hash bytea NOT NULL,
    status       integer NOT NULL,
    response     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
