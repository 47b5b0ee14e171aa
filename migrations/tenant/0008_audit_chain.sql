-- The audit chain: entries are written unsealed (seq and hash NULL) in their change's own
-- transaction; the sealer numbers them, chains them (hash = sha256(previous hash, entry)) and
-- signs a checkpoint, in one transaction per round.
ALTER TABLE audit_log ADD COLUMN seq bigint, ADD COLUMN hash bytea;
CREATE UNIQUE INDEX audit_log_seq ON audit_log (seq);
CREATE INDEX audit_log_unsealed ON audit_log (id) WHERE seq IS NULL;

-- Search orders and pages by id (UUIDv7: creation time first), so every filter has an index
-- ending in id.
DROP INDEX audit_log_at;
DROP INDEX audit_log_target;
DROP INDEX audit_log_actor;
CREATE INDEX audit_log_actor ON audit_log (actor_id, id);
CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_target ON audit_log (target_type, target_id, id);
CREATE INDEX audit_log_request ON audit_log (request_id, id) WHERE request_id IS NOT NULL;

-- HMAC-signed checkpoints (the key lives outside this database).
CREATE TABLE audit_checkpoints (
    seq       bigint PRIMARY KEY,
    hash      bytea NOT NULL,
    signature bytea NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);

-- Signed anchors of pruned prefixes: verification starts after the newest one.
CREATE TABLE audit_anchors (
    seq       bigint PRIMARY KEY,
    hash      bytea NOT NULL,
    signature bytea NOT NULL,
    pruned    bigint NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);

-- One row: retention and forwarding to the tenant's syslog collector.
CREATE TABLE audit_settings (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    retention_days integer CHECK (retention_days BETWEEN 1 AND 36500),
    syslog_host    text CHECK (char_length(syslog_host) BETWEEN 1 AND 253),
    syslog_port    integer CHECK (syslog_port BETWEEN 1 AND 65535),
    syslog_tls     boolean NOT NULL DEFAULT false,
    forwarded_seq  bigint NOT NULL DEFAULT 0,
    forward_error  text,
    forwarded_at   timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO audit_settings DEFAULT VALUES;
