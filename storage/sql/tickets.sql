-- Tickets as the CRUD API sees them. Only title and description are written here: status,
-- agent and the timestamps belong to the dispatcher (dispatch.sql), and so does deletion.
-- Lists come in one variant per filter so that each gets a plan that uses its index.

-- tickets_insert_many --
-- Create tickets from parallel arrays of titles and descriptions, in array order, in one
-- statement (all or nothing; the insert trigger notifies the dispatcher once).
INSERT INTO tickets (title, description)
SELECT title, description
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS given (title, description, position)
ORDER BY position
RETURNING id, title, description, status, agent_id AS agent, created_at, assigned_at, sold_at

-- tickets_by_id --
-- One ticket.
SELECT id, title, description, status, agent_id AS agent, created_at, assigned_at, sold_at
FROM tickets
WHERE id = $1

-- tickets_update_text_if_agent --
-- Change title and/or description (a null keeps the value). $4 is the agent that must hold
-- the ticket (null for admins): no row when the ticket is gone or was taken from that agent
-- since it was read.
UPDATE tickets
SET title = coalesce($2, title), description = coalesce($3, description)
WHERE id = $1 AND ($4::bigint IS NULL OR agent_id = $4)
RETURNING id, title, description, status, agent_id AS agent, created_at, assigned_at, sold_at

-- tickets_count --
-- How many tickets there are.
SELECT count(*) FROM tickets

-- tickets_page --
-- One page of all tickets in id order ($1 limit, $2 offset, after id $3).
SELECT id, title, description, status, agent_id AS agent, created_at, assigned_at, sold_at
FROM tickets
WHERE id > $3
ORDER BY id
LIMIT $1 OFFSET $2

-- tickets_count_by_status --
-- How many tickets have status $1 (assigned or sold: unassigned ones have their own query).
SELECT count(*) FROM tickets WHERE status = $1

-- tickets_page_by_status --
-- One page of the tickets with status $1 in id order ($2 limit, $3 offset, after id $4).
SELECT id, title, description, status, agent_id AS agent, created_at, assigned_at, sold_at
FROM tickets
WHERE status = $1 AND id > $4
ORDER BY id
LIMIT $2 OFFSET $3

-- tickets_count_unassigned --
-- How many tickets wait in the queue: its index says `agent_id IS NULL` (0006).
SELECT count(*) FROM tickets WHERE agent_id IS NULL

-- tickets_page_unassigned --
-- One page of the queue in id order ($1 limit, $2 offset, after id $3).
SELECT id, title, description, status, agent_id AS agent, created_at, assigned_at, sold_at
FROM tickets
WHERE agent_id IS NULL AND id > $3
ORDER BY id
LIMIT $1 OFFSET $2

-- tickets_count_by_agent --
-- How many tickets agent $1 has (held or sold), of status $2 when it is not null.
SELECT count(*) FROM tickets WHERE agent_id = $1 AND ($2::text IS NULL OR status = $2)

-- tickets_page_by_agent --
-- One page of agent $1's tickets (of status $2 when not null) in id order ($3 limit,
-- $4 offset, after id $5). One index holds an agent's held and sold tickets alike (0006): a
-- status is a filter.
SELECT id, title, description, status, agent_id AS agent, created_at, assigned_at, sold_at
FROM tickets
WHERE agent_id = $1 AND ($2::text IS NULL OR status = $2) AND id > $5
ORDER BY id
LIMIT $3 OFFSET $4
