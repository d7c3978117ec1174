-- An agent may fetch and sell only while its user is active too: deactivating the user gives
-- the agent's tickets back, and no fetch takes new ones. The dispatcher reads "active" as
-- agents.is_active AND users.is_active (storage/sql/dispatch.sql), at every load; this trigger
-- tells the leader when a user's activity changes, whichever process or tool changed it (an
-- API server that is a standby, the CLI, plain SQL), so it applies the change at once.
-- The leader re-reads the agent from the database, so a lost notification costs only time:
-- every reload (a new leader, a failed commit) applies the same rule.

CREATE FUNCTION users_notify_agent_activity() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dispatcher_agent_changed', a.id::text) FROM agents AS a
    WHERE a.user_id = NEW.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_agent_activity_changed AFTER UPDATE OF is_active ON users
    FOR EACH ROW WHEN (OLD.is_active IS DISTINCT FROM NEW.is_active)
    EXECUTE FUNCTION users_notify_agent_activity();
