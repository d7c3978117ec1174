-- Agents as the CRUD API sees them. Creation is a plain insert (the dispatcher meets new
-- agents on their first fetch); every change to capacity, activity or existence goes through
-- the dispatcher, whose memory holds them (see dispatcher/service.py).
-- `held` is counted from the tickets table: keep its definition in sync across queries.

-- agents_insert_if_user_exists --
-- Make a user an agent; no row when the user does not exist, Conflict when it already is one.
INSERT INTO agents (user_id, capacity)
SELECT id, $2 FROM users WHERE id = $1
RETURNING id, user_id AS "user", capacity, is_active, 0 AS held

-- agents_by_id --
-- One agent with the number of tickets it holds now.
SELECT a.id, a.user_id AS "user", a.capacity, a.is_active,
       (SELECT count(*) FROM tickets t WHERE t.agent_id = a.id AND t.status = 'assigned') AS held
FROM agents a
WHERE a.id = $1

-- agents_count --
-- How many agents there are, for a page's count.
SELECT count(*) FROM agents

-- agents_page --
-- One page of agents in id order ($1 limit, $2 offset, after id $3), with what each holds.
SELECT a.id, a.user_id AS "user", a.capacity, a.is_active,
       (SELECT count(*) FROM tickets t WHERE t.agent_id = a.id AND t.status = 'assigned') AS held
FROM agents a
WHERE a.id > $3
ORDER BY a.id
LIMIT $1 OFFSET $2
