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
-- One page of all tickets in id order ($1 limit, $2 offset).
SELECT id, title, description, status, agent_id AS agent, created_at, assigned_at, sold_at
FROM tickets
ORDER BY id
LIMIT $1 OFFSET $2

-- tickets_count_by_status --
-- How many tickets have status $1.
SELECT count(*) FROM tickets WHERE status = $1

-- tickets_page_by_status --
-- One page of the tickets with status $1 in id order ($2 limit, $3 offset).
SELECT id, title, description, status, agent_id AS agent, created_at, assigned_at, sold_at
FROM tickets
WHERE status = $1
ORDER BY id
LIMIT $2 OFFSET $3

-- tickets_count_by_agent --
-- How many tickets agent $1 has (held or sold), of status $2 when it is not null.
-- One arm per status: each is what one partial index (held, sold) by agent answers.
SELECT (SELECT count(*) FROM tickets
        WHERE agent_id = $1 AND status = 'assigned' AND ($2::text IS NULL OR $2 = 'assigned'))
     + (SELECT count(*) FROM tickets
        WHERE agent_id = $1 AND status = 'sold' AND ($2::text IS NULL OR $2 = 'sold'))

-- tickets_page_by_agent --
-- One page of agent $1's tickets (of status $2 when not null) in id order ($3 limit, $4 offset).
-- Two arms, one per partial index, merged in id order.
SELECT id, title, description, status, agent_id AS agent, created_at, assigned_at, sold_at
FROM tickets
WHERE agent_id = $1 AND status = 'assigned' AND ($2::text IS NULL OR $2 = 'assigned')
UNION ALL
SELECT id, title, description, status, agent_id AS agent, created_at, assigned_at, sold_at
FROM tickets
WHERE agent_id = $1 AND status = 'sold' AND ($2::text IS NULL OR $2 = 'sold')
ORDER BY id
LIMIT $3 OFFSET $4
