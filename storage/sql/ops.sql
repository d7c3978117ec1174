-- The operations commands' queries (`tickets stats`, `tickets release`, `tickets dispatcher
-- status`). All read-only except `admin_notify`, which only sends a notification. They run on
-- a live database next to the service, so each reads through an index or aggregates once.

-- ops_backlog --
-- Unassigned tickets, and the oldest one's creation time and age in seconds (null when none).
SELECT
    (SELECT count(*) FROM tickets WHERE agent_id IS NULL) AS unassigned,
    oldest.created_at AS oldest_created_at,
    extract(epoch FROM now() - oldest.created_at)::float8 AS oldest_age_s
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    -- ids are the creation order (see 0001_initial.sql): the lowest id waited longest.
    -- `agent_id IS NULL` is the queue, as its index says (0006).
    SELECT created_at FROM tickets WHERE agent_id IS NULL ORDER BY id LIMIT 1
) AS oldest ON true

-- ops_agents_top --
-- The $1 agents holding the most tickets (then by id), with what they hold and have sold.
-- Active as the dispatcher counts it (agent_can_trade, migration 0010), so the capacities
-- add up to what the queue can hand out.
SELECT a.id AS agent_id, u.username, a.capacity,
       agent_can_trade(a, u) AS is_active,
       coalesce(t.held, 0) AS held, coalesce(t.sold, 0) AS sold
FROM agents AS a
JOIN users AS u ON u.id = a.user_id
LEFT JOIN (
    SELECT agent_id,
           count(*) FILTER (WHERE status = 'assigned') AS held,
           count(*) FILTER (WHERE status = 'sold') AS sold
    FROM tickets
    WHERE agent_id IS NOT NULL
    GROUP BY agent_id
) AS t ON t.agent_id = a.id
ORDER BY held DESC, a.id
LIMIT $1

-- ops_agents_totals --
-- Every agent counted: how many, how many active (as above) and their capacity, all held and
-- sold.
WITH trading AS (
    SELECT a.capacity FROM agents AS a JOIN users AS u ON u.id = a.user_id
    WHERE agent_can_trade(a, u)
)
SELECT
    (SELECT count(*) FROM agents) AS agents,
    (SELECT count(*) FROM trading) AS active,
    (SELECT coalesce(sum(capacity), 0) FROM trading)::bigint AS active_capacity,
    (SELECT count(*) FROM tickets WHERE status = 'assigned') AS held,
    (SELECT count(*) FROM tickets WHERE status = 'sold') AS sold

-- ops_throughput_by_minute --
-- Assignments and sales in each of the last $1 minutes: minutes_ago 1 is the last 60 s.
-- The view's groups are read by `at` through their BRIN index (migrations 0003, 0004).
WITH recent AS (
    SELECT event,
           greatest(1, ceil(extract(epoch FROM now() - at) / 60))::int AS minutes_ago
    FROM ticket_events
    WHERE at > now() - make_interval(mins => $1) AND event IN ('assigned', 'sold')
)
SELECT m.minutes_ago,
       count(r.event) FILTER (WHERE r.event = 'assigned') AS assigned,
       count(r.event) FILTER (WHERE r.event = 'sold') AS sold
FROM generate_series(1, $1) AS m(minutes_ago)
LEFT JOIN recent AS r ON r.minutes_ago = m.minutes_ago
GROUP BY m.minutes_ago
ORDER BY m.minutes_ago

-- ops_lock_sessions --
-- Sessions holding (granted: the leader) or waiting for (the standbys) the dispatcher's
-- advisory lock $1 in *this* database, holder first. Advisory locks are per database, so
-- other databases on the server with the same key are left out. Keep the key arithmetic in
-- sync with pg_advisory_lock(bigint): high 32 bits in classid, low in objid, objsubid 1.
SELECT l.pid, l.granted, l.waitstart,
       host(a.client_addr) AS client_addr, a.client_port, a.backend_start, a.application_name
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = $1
ORDER BY l.granted DESC, l.waitstart NULLS LAST, l.pid

-- ops_agent_by_id --
-- The agent a release names by id, with its username; no row when there is none.
SELECT a.id AS agent_id, u.username FROM agents AS a JOIN users AS u ON u.id = a.user_id
WHERE a.id = $1

-- ops_agent_by_username --
-- The agent a release names by username; no row when the user is unknown or not an agent.
SELECT a.id AS agent_id, u.username FROM agents AS a JOIN users AS u ON u.id = a.user_id
WHERE u.username = $1

-- admin_notify --
-- Send a notification ($1 channel, $2 payload): the admin mailbox of dispatcher/actor.py.
SELECT pg_notify($1, $2)

-- ops_now --
-- The database's clock, so that ages are computed against the times it wrote.
SELECT now()

-- ops_released_in_batch --
-- The tickets a release gave back, from its audit entry: agent $1, epoch $2, batch $3,
-- written at or after $4 (which lets the BRIN index on `at` skip the older log).
SELECT coalesce(array_agg(t.ticket_id ORDER BY t.ticket_id), '{}')
FROM ticket_event_groups AS g
CROSS JOIN LATERAL unnest(g.ticket_ids) AS t(ticket_id)
WHERE g.event = 'released' AND g.agent_id = $1 AND g.epoch = $2 AND g.batch = $3
  AND g.at >= $4
