-- The dispatcher's statements. Every write is guarded (it only changes rows in the state the
-- dispatcher's memory expects) and fenced (it only runs while dispatcher_leadership.epoch is
-- ours); callers compare row counts with what they asked for. Keep the guards in sync with
-- the decisions of dispatcher/core.py.

-- dispatcher_leadership_claim --
-- Bump the fencing token on taking the advisory lock; returns the new epoch.
UPDATE dispatcher_leadership
SET epoch = epoch + 1, holder = $1, holder_pid = pg_backend_pid(), since = now()
RETURNING epoch

-- dispatcher_leadership_get --
-- Who leads (or led last), since when, and how far it got.
SELECT epoch, holder, holder_pid, since, last_batch FROM dispatcher_leadership

-- dispatcher_lock_holder --
-- The backend holding the dispatcher's advisory lock, if any, and where it connects from.
SELECT l.pid, a.client_addr::text AS client_addr, a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = $1

-- tickets_lock_holders --
-- Other sessions holding a lock the dispatcher's statements can wait for, oldest transaction
-- first: on the tables a batch, a release or a load writes or reads. A row lock shows as its
-- table's RowShareLock (SELECT FOR UPDATE/SHARE) or RowExclusiveLock (UPDATE, DELETE); the
-- stronger modes are table locks (CREATE INDEX, LOCK TABLE, ALTER TABLE). AccessShareLock,
-- taken by every plain read, blocks only ACCESS EXCLUSIVE, never the dispatcher's writes.
SELECT a.pid, l.relation::regclass::text AS locked, l.mode, a.usename::text AS usename,
       a.client_addr::text AS client_addr, a.state, a.xact_start::text AS xact_start,
       left(a.query, 200) AS query
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.granted AND l.mode <> 'AccessShareLock'
  AND l.relation IN ('tickets'::regclass, 'agents'::regclass, 'users'::regclass,
                     'dispatcher_leadership'::regclass, 'ticket_event_groups'::regclass)
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.pid <> pg_backend_pid()
ORDER BY a.xact_start, a.pid
LIMIT 10

-- dispatcher_agents_all --
-- Every agent, for a snapshot. Active means it may trade (agent_can_trade, migration 0010).
SELECT a.id, a.capacity, agent_can_trade(a, u) AS is_active
FROM agents AS a JOIN users AS u ON u.id = a.user_id

-- dispatcher_agents_by_ids --
-- Agents the dispatcher has not met yet (created after its snapshot), active as above.
SELECT a.id, a.capacity, agent_can_trade(a, u) AS is_active
FROM agents AS a JOIN users AS u ON u.id = a.user_id
WHERE a.id = ANY($1::bigint[])

-- tickets_held_all --
-- Every held ticket, for a snapshot.
SELECT id, agent_id FROM tickets WHERE status = 'assigned'

-- tickets_held_by_agents --
-- Held tickets of agents the dispatcher has not met yet.
SELECT id, agent_id FROM tickets WHERE status = 'assigned' AND agent_id = ANY($1::bigint[])

-- tickets_unassigned_after --
-- The next unassigned ids in creation order above an id (0 for the first window), as one
-- array: asyncpg decodes an array in C, where it builds a Record for each of 10,000 rows.
-- `agent_id IS NULL` means unassigned (a CHECK) and is what the queue's index says (0006).
SELECT coalesce(array_agg(id ORDER BY id), '{}') AS ids
FROM (SELECT id FROM tickets WHERE agent_id IS NULL AND id > $1 ORDER BY id LIMIT $2) AS next

-- tickets_unassigned_between --
-- Unassigned ids in a range just announced by the insert trigger.
SELECT id FROM tickets WHERE agent_id IS NULL AND id BETWEEN $1 AND $2 ORDER BY id LIMIT $3

-- tickets_facts_by_ids --
-- What the store says of tickets the dispatcher no longer tracks (for judging a sale).
SELECT id, status, agent_id FROM tickets WHERE id = ANY($1::bigint[])

-- tickets_commit_batch --
-- A whole batch in ONE statement, so in one round trip and one implicit transaction: fence,
-- guarded assignments, guarded sales, their audit events, then dispatcher_guard() aborts it
-- all unless every count matches what was decided (fence 1; every assignment; every sale,
-- and each by the agent that holds it). Returns what fetches answer with: one row per
-- assigned ticket (a single row of NULLs when none were), timestamps as ISO text.
-- All parts see one snapshot, so a ticket cannot be assigned and sold in the same batch:
-- the actor defers such a sale to the next batch.
-- Sales find rows by primary key only, one probe per id, like assignments:
-- * joining the (ticket, agent) pairs inside the UPDATE let the planner pick a nested loop
--   over every held ticket on stale statistics;
-- * `status = 'assigned'` let it hash the whole held index instead, while statistics still
--   showed few held tickets (that index is gone since 0006): the CHECK on status makes the
--   two `<>` mean the same and they match no index predicate;
-- * `id = ANY($5)` is planned well but costs PostgreSQL 18 a binary search of the array per
--   index entry read: the dispatcher-only benchmark commits 5-10% fewer changes per second.
-- The id and agent arrays arrive as near-square matrices padded with NULLs at the end
-- (storage/wire.py says why); unnest reads them in order, a NULL id matches no row, and the
-- guards count against the decided numbers ($7 assignments, $8 sales), not the arrays.
WITH fence AS (
    UPDATE dispatcher_leadership SET last_batch = $2 WHERE epoch = $1 RETURNING epoch
), assigned AS (
    UPDATE tickets AS t
    SET status = 'assigned', agent_id = d.agent_id, assigned_at = now()
    FROM unnest($3::bigint[], $4::bigint[]) AS d(ticket_id, agent_id), fence
    WHERE t.id = d.ticket_id AND t.status = 'unassigned'
    RETURNING t.id, t.agent_id, t.title, t.description, t.created_at, t.assigned_at
), sold AS (
    UPDATE tickets AS t
    SET status = 'sold', sold_at = now()
    FROM unnest($5::bigint[]) AS d(ticket_id), fence
    WHERE t.id = d.ticket_id AND t.status <> 'unassigned' AND t.status <> 'sold'
    RETURNING t.id, t.agent_id
), logged AS (
    INSERT INTO ticket_event_groups (ticket_ids, event, agent_id, epoch, batch)
    SELECT array_agg(id ORDER BY id), 'assigned', agent_id, $1, $2 FROM assigned GROUP BY agent_id
    UNION ALL
    SELECT array_agg(id ORDER BY id), 'sold', agent_id, $1, $2 FROM sold GROUP BY agent_id
), checked AS (
    SELECT dispatcher_guard('fence', 1, (SELECT count(*) FROM fence))
         + dispatcher_guard('assign', $7::int, (SELECT count(*) FROM assigned))
         + dispatcher_guard(
               'sell',
               $8::int,
               (SELECT count(*)
                FROM sold AS s
                JOIN unnest($5::bigint[], $6::bigint[]) AS d(ticket_id, agent_id)
                  ON d.ticket_id = s.id AND d.agent_id = s.agent_id)
           ) AS ok
)
SELECT a.id, a.title, a.description, a.created_at::text, a.assigned_at::text
FROM checked LEFT JOIN assigned AS a ON true

-- tickets_release_many_if_held --
-- Give an agent's tickets back to the queue and log it; returns rows released.
WITH fence AS (
    UPDATE dispatcher_leadership SET last_batch = $2 WHERE epoch = $1 RETURNING epoch
), released AS (
    UPDATE tickets AS t
    SET status = 'unassigned', agent_id = NULL, assigned_at = NULL
    FROM fence
    WHERE t.id = ANY($4::bigint[]) AND t.agent_id = $3 AND t.status = 'assigned'
    RETURNING t.id
), logged AS (
    INSERT INTO ticket_event_groups (ticket_ids, event, agent_id, epoch, batch)
    SELECT array_agg(id ORDER BY id), 'released', $3, $1, $2 FROM released HAVING count(*) > 0
)
SELECT (SELECT count(*) FROM fence) AS fenced, (SELECT count(*) FROM released) AS released

-- tickets_delete_if_unassigned --
-- Delete one unassigned ticket (fenced) and log it; returns 1 when deleted.
WITH fence AS (
    UPDATE dispatcher_leadership SET last_batch = $2 WHERE epoch = $1 RETURNING epoch
), deleted AS (
    DELETE FROM tickets AS t USING fence WHERE t.id = $3 AND t.status = 'unassigned'
    RETURNING t.id
), logged AS (
    INSERT INTO ticket_event_groups (ticket_ids, event, agent_id, epoch, batch)
    SELECT ARRAY[id], 'deleted', NULL, $1, $2 FROM deleted
)
SELECT (SELECT count(*) FROM fence) AS fenced, (SELECT count(*) FROM deleted) AS deleted

-- tickets_status_by_id --
-- Why a ticket could not be deleted: missing, or held.
SELECT status FROM tickets WHERE id = $1

-- agents_update_dispatch --
-- Change an agent's capacity and activity (NULL keeps a value; all NULL re-reads it);
-- returns the state the dispatcher keeps: active only while its user is too, and no admin.
UPDATE agents AS a
SET capacity = coalesce($2, a.capacity), is_active = coalesce($3, a.is_active)
FROM users AS u
WHERE a.id = $1 AND u.id = a.user_id
RETURNING a.id, a.capacity, agent_can_trade(a, u) AS is_active

-- agents_delete_by_id --
-- Delete an agent row; a history of tickets makes this a foreign-key Conflict.
DELETE FROM agents WHERE id = $1 RETURNING id

-- tickets_payload_by_ids --
-- What a fetch answers with, for tickets memory says are held from earlier batches (as
-- tickets_commit_batch returns them: timestamps as ISO text), with who holds them in the
-- database, for the caller to compare with memory. By primary key: a join over an unnest
-- of the ids and agents was planned as a scan of the table in `make bench` (p99 ~100 ms).
SELECT id, title, description, created_at::text, assigned_at::text, agent_id, status
FROM tickets WHERE id = ANY($1::bigint[])
