-- Audit entries by actor over time (team activity, search by actor).
CREATE INDEX audit_log_actor ON audit_log (actor_id, at);
