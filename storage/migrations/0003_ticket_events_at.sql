-- `tickets stats` reads the last minutes of ticket_events by time. The table is append-only
-- and `at` only grows with its physical order, so a BRIN index serves that read for almost
-- no cost on the dispatcher's inserts (a B-tree here would be paid on every batch).
CREATE INDEX ticket_events_at ON ticket_events USING brin (at);
