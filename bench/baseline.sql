-- The BASELINE's statements: the usual way to hand out queue rows from PostgreSQL, one
-- transaction per request, `FOR UPDATE SKIP LOCKED`. This file is a comparison target for
-- bench/, NOT the product: the product's SQL lives in storage/sql/ and nothing there may use
-- these. Blocks follow the product's format (`-- name --`, a description, the SQL) so the
-- same parser (storage/queries.py) reads them.
--
-- Fairness: each statement is one round trip, the queue read walks the product's own partial
-- index `tickets_unassigned_by_id` (agent_id IS NULL, in id order), the held read uses an
-- index of its own (`baseline_indexes`, the one the product had before migration 0006), and
-- every assignment and sale is logged exactly like the product does: one ticket_event_groups
-- row per agent and event (epoch 0, batch = the transaction id).

-- baseline_indexes --
-- Held tickets by agent, which every fetch reads: without it the read walks the agent's sold
-- tickets too. It makes sales update an index again (no HOT), as the product's did.
CREATE INDEX IF NOT EXISTS baseline_tickets_held_by_agent
    ON tickets (agent_id, id) WHERE status = 'assigned'

-- baseline_agent_lock --
-- Lock the caller's agent row, so two fetches of one agent take turns and the count of held tickets read next is exact.
SELECT capacity, is_active FROM agents WHERE id = $1 FOR UPDATE

-- baseline_fetch_top_up --
-- Held tickets plus a top-up to capacity $2 with the oldest unassigned tickets no one else has locked, logged.
WITH held AS (
    SELECT id, title, description, created_at, assigned_at
    FROM tickets
    WHERE agent_id = $1 AND status = 'assigned'
), picked AS (
    SELECT id
    FROM tickets
    WHERE agent_id IS NULL
    ORDER BY id
    LIMIT greatest($2::int - (SELECT count(*) FROM held), 0)
    FOR UPDATE SKIP LOCKED
), assigned AS (
    UPDATE tickets AS t
    SET status = 'assigned', agent_id = $1, assigned_at = now()
    -- An array, not a join: the LIMIT above is only known at run time, and a join would let
    -- the planner expect thousands of picked rows and scan the table.
    WHERE t.id = ANY (ARRAY(SELECT id FROM picked)) AND t.status = 'unassigned'
    RETURNING t.id, t.title, t.description, t.created_at, t.assigned_at
), logged AS (
    INSERT INTO ticket_event_groups (ticket_ids, event, agent_id, epoch, batch)
    SELECT array_agg(id ORDER BY id), 'assigned', $1, 0, txid_current() FROM assigned
    HAVING count(*) > 0
)
SELECT * FROM held
UNION ALL
SELECT * FROM assigned
ORDER BY id

-- baseline_sell_if_held --
-- Sell the listed tickets the caller holds (guarded by agent and status), logged; returns the ids sold.
WITH sold AS (
    UPDATE tickets
    SET status = 'sold', sold_at = now()
    WHERE id = ANY($2::bigint[]) AND agent_id = $1 AND status = 'assigned'
    RETURNING id
), logged AS (
    INSERT INTO ticket_event_groups (ticket_ids, event, agent_id, epoch, batch)
    SELECT array_agg(id ORDER BY id), 'sold', $1, 0, txid_current() FROM sold
    HAVING count(*) > 0
)
SELECT id FROM sold

-- baseline_ticket_facts --
-- Why some tickets of a sale could not be sold (read after the guarded update fell short).
SELECT id, status, agent_id FROM tickets WHERE id = ANY($1::bigint[])
