-- Users' changes as outbox events, written by a trigger so that every path that changes a user
-- (sign-in provisioning, the directory sync, admin edits, profile updates, erasure, deletion)
-- emits one in its own transaction. Only changes a mirror would see count: `last_seen_at`,
-- `updated_at` and personal `preferences` alone do not.
CREATE FUNCTION user_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    topic text;
    row_id uuid;
    row_status text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        topic := 'user.created';
        row_id := NEW.id;
        row_status := NEW.status;
    ELSIF TG_OP = 'DELETE' THEN
        topic := 'user.deleted';
        row_id := OLD.id;
        row_status := 'deleted';
    ELSE
        IF (to_jsonb(OLD) - 'last_seen_at' - 'updated_at' - 'preferences')
           = (to_jsonb(NEW) - 'last_seen_at' - 'updated_at' - 'preferences') THEN
            RETURN NULL;
        END IF;
        topic := CASE WHEN NEW.status = 'deleted' AND OLD.status <> 'deleted'
                      THEN 'user.deleted' ELSE 'user.updated' END;
        row_id := NEW.id;
        row_status := NEW.status;
    END IF;
    EXECUTE format('INSERT INTO %I.outbox (topic, aggregate_type, aggregate_id, payload) '
                   'VALUES ($1, $2, $3, $4)', TG_TABLE_SCHEMA)
        USING topic, 'user', row_id::text, jsonb_build_object('id', row_id, 'status', row_status);
    RETURN NULL;
END
$$;

CREATE TRIGGER users_outbox AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION user_outbox();
