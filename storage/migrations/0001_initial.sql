-- The whole schema of the first release. Ticket ids are the creation order: the dispatcher
-- hands out the lowest unassigned id first, so ids come from an identity column and are
-- never written by hand.

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 150),
    email         text NOT NULL DEFAULT '' CHECK (length(email) <= 254),
    password_hash text NOT NULL,
    is_staff      boolean NOT NULL DEFAULT false,
    is_active     boolean NOT NULL DEFAULT true,
    date_joined   timestamptz NOT NULL DEFAULT now()
);

-- Only a SHA-256 of each key is stored: a leaked table grants nothing.
CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_sha256   bytea NOT NULL UNIQUE CHECK (length(key_sha256) = 32),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE agents (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint NOT NULL UNIQUE REFERENCES users (id) ON DELETE RESTRICT,
    capacity   integer NOT NULL DEFAULT 15 CHECK (capacity BETWEEN 0 AND 1000),
    is_active  boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tickets (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 10000),
    status      text NOT NULL DEFAULT 'unassigned'
                CHECK (status IN ('unassigned', 'assigned', 'sold')),
    -- RESTRICT: an agent with a history of tickets is deactivated, never deleted.
    agent_id    bigint REFERENCES agents (id) ON DELETE RESTRICT,
    created_at  timestamptz NOT NULL DEFAULT now(),
    assigned_at timestamptz,
    sold_at     timestamptz,
    CONSTRAINT tickets_agent_matches_status CHECK ((status = 'unassigned') = (agent_id IS NULL)),
    CONSTRAINT tickets_assigned_at_matches_status
        CHECK ((status = 'unassigned') = (assigned_at IS NULL)),
    CONSTRAINT tickets_sold_at_matches_status CHECK ((status = 'sold') = (sold_at IS NOT NULL))
);
-- The dispatcher's queue, read in id order; stays small because sold tickets leave it.
CREATE INDEX tickets_unassigned_by_id ON tickets (id) WHERE status = 'unassigned';
CREATE INDEX tickets_held_by_agent ON tickets (agent_id, id) WHERE status = 'assigned';
CREATE INDEX tickets_by_agent ON tickets (agent_id, id);

-- Append-only: every assignment, sale and release, with the leader epoch that wrote it.
-- No foreign key to tickets: the audit outlives a deleted ticket.
CREATE TABLE ticket_events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id bigint NOT NULL,
    event     text NOT NULL CHECK (event IN ('assigned', 'sold', 'released', 'deleted')),
    agent_id  bigint,
    epoch     bigint NOT NULL,
    batch     bigint NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ticket_events_ticket ON ticket_events (ticket_id);

-- One row: the fencing token. Each new leader bumps epoch; each batch checks it.
CREATE TABLE dispatcher_leadership (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch      bigint NOT NULL DEFAULT 0,
    holder     text,
    holder_pid integer,
    since      timestamptz,
    last_batch bigint NOT NULL DEFAULT 0
);
INSERT INTO dispatcher_leadership DEFAULT VALUES;

-- Tell the dispatcher about new tickets, whoever inserts them (this service, the CLI, psql).
-- One notification per statement, not per row, so a bulk import stays cheap.
CREATE FUNCTION tickets_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    low bigint;
    high bigint;
BEGIN
    SELECT min(id), max(id) INTO low, high FROM inserted;
    IF low IS NOT NULL THEN
        PERFORM pg_notify('tickets_inserted', low || ',' || high);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER tickets_notify_inserted AFTER INSERT ON tickets
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION tickets_notify_inserted();
