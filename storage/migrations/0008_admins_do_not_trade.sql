-- Admins do not trade (they get 403 on fetch and sell), so an agent whose user becomes an
-- admin must stop like one whose user is deactivated: its tickets go back to the queue at
-- once, instead of waiting, unsold, with someone who can no longer fetch or sell them. The
-- dispatcher reads "active" as agents.is_active AND users.is_active AND NOT users.is_staff
-- (storage/sql/dispatch.sql); this trigger, which 0007 created for is_active, now tells the
-- leader of either change.

DROP TRIGGER users_agent_activity_changed ON users;

CREATE TRIGGER users_agent_activity_changed AFTER UPDATE OF is_active, is_staff ON users
    FOR EACH ROW WHEN (OLD.is_active IS DISTINCT FROM NEW.is_active
                       OR OLD.is_staff IS DISTINCT FROM NEW.is_staff)
    EXECUTE FUNCTION users_notify_agent_activity();
