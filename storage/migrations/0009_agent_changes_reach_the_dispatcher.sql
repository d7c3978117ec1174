-- An agent's capacity or activity changed outside the dispatcher (plain SQL, a restore
-- script) reaches the leader like a user's activity does (0007): it re-reads the agent and
-- applies it at once, giving back the newest excess over a lowered capacity, or everything
-- when deactivated. Without it the leader went on topping the agent up to the old capacity
-- until its next reload. The dispatcher's own updates notify too; its re-read changes
-- nothing, so it notifies nothing.

CREATE FUNCTION agents_notify_dispatch_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dispatcher_agent_changed', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER agents_dispatch_changed AFTER UPDATE OF capacity, is_active ON agents
    FOR EACH ROW WHEN (OLD.capacity IS DISTINCT FROM NEW.capacity
                       OR OLD.is_active IS DISTINCT FROM NEW.is_active)
    EXECUTE FUNCTION agents_notify_dispatch_change();
