-- A release that still writes the per-ticket audit rows (a leader of the previous version
-- during a rolling deploy, a script) keeps working against the view: each row becomes a
-- group of one. The dispatcher of this version writes ticket_event_groups directly.
CREATE FUNCTION ticket_events_insert_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ticket_event_groups (ticket_ids, event, agent_id, epoch, batch, at)
    VALUES (ARRAY[NEW.ticket_id], NEW.event, NEW.agent_id, NEW.epoch, NEW.batch,
            coalesce(NEW.at, now()));
    RETURN NEW;
END;
$$;
CREATE TRIGGER ticket_events_insert INSTEAD OF INSERT ON ticket_events
    FOR EACH ROW EXECUTE FUNCTION ticket_events_insert_row();
