-- The platform's own event rules (in code) apply to events from this point on: a tenant that
-- existed before gets no notifications for its past events.
ALTER TABLE notification_rule_cursor ADD COLUMN since timestamptz NOT NULL DEFAULT now();
