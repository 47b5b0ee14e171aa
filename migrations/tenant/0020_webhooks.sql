-- Webhooks: endpoints a tenant registers, the messages (one event for one endpoint) queued
-- from the outbox in commit order, and every delivery attempt.

CREATE TABLE webhook_endpoints (
    id                   uuid PRIMARY KEY,
    url                  text NOT NULL,
    description          text NOT NULL DEFAULT '',
    -- Event types (exact, or a family as `resource.*`); empty = every type.
    event_types          text[] NOT NULL DEFAULT '{}',
    -- Most deliveries per second to this endpoint (NULL: no limit of its own).
    rate_limit           integer,
    enabled              boolean NOT NULL DEFAULT true,
    disabled_reason      text,
    -- Secrets, sealed (crypto::Keyring): never in clear.
    secret               text NOT NULL,
    previous_secret      text,
    previous_expires_at  timestamptz,
    signing_key          text,
    public_key           text,
    -- When deliveries began failing without a success since (automatic disable after a period).
    failing_since        timestamptz,
    -- A worker's hold on this endpoint's queue (one instance delivers to an endpoint at a time).
    lease_until          timestamptz,
    created_by           uuid,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- The router's position in the outbox: messages for every endpoint are written in the same
-- transaction that moves it.
CREATE TABLE webhook_cursor (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    txid        bigint NOT NULL DEFAULT 0,
    seq         bigint NOT NULL DEFAULT 0
);
INSERT INTO webhook_cursor DEFAULT VALUES;

CREATE TABLE webhook_messages (
    id           uuid PRIMARY KEY,
    endpoint_id  uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_type   text NOT NULL,
    -- The outbox position of the event (`txid:seq`), so a receiver can order and deduplicate.
    event_id     text NOT NULL,
    event_at     timestamptz NOT NULL,
    payload      jsonb NOT NULL,
    -- pending → succeeded | failed (a dead letter, retried by hand)
    status       text NOT NULL DEFAULT 'pending',
    attempts     integer NOT NULL DEFAULT 0,
    due_at       timestamptz NOT NULL DEFAULT now(),
    last_status  integer,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    seq          bigserial
);
CREATE INDEX webhook_messages_due ON webhook_messages (endpoint_id, due_at, seq)
    WHERE status = 'pending';
CREATE INDEX webhook_messages_list ON webhook_messages (endpoint_id, created_at DESC, id);

CREATE TABLE webhook_attempts (
    message_id     uuid NOT NULL REFERENCES webhook_messages (id) ON DELETE CASCADE,
    n              integer NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    url            text NOT NULL,
    request_body   text NOT NULL,
    response_status integer,
    response_body  text,
    error          text,
    duration_ms    integer NOT NULL,
    PRIMARY KEY (message_id, n)
);

-- Replays select events by time.
CREATE INDEX outbox_at ON outbox (at);
