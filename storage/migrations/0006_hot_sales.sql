-- A sale becomes a heap-only (HOT) update: PostgreSQL writes the sold version of the row
-- beside the held one on the same page and touches no index at all, where it used to add a
-- primary-key entry and a tickets_sold_by_agent entry for every ticket sold.
--
-- HOT needs two things (PostgreSQL manual, "Heap-Only Tuples"):
-- 1. The update changes no column that an index uses, in its key OR its predicate. A sale
--    changes status and sold_at, so no index may mention them:
--    * the queue's partial index says `agent_id IS NULL`, which the CHECK
--      tickets_agent_matches_status makes the same rows as `status = 'unassigned'`;
--    * the two by-agent indexes split by status (held, sold) become one over every ticket
--      with an agent. A read of an agent's held tickets walks its sold ones too: the
--      dispatcher keeps holdings in memory and never reads them this way on its hot path;
--      admin listings and `tickets stats` pay the walk.
-- 2. The page has room for the new version. New pages are filled to half, which leaves room
--    for the held and the sold version of each row before pruning reclaims the dead ones.
--    (Existing pages are not rewritten; rows inserted from now on get the room.)
--
-- Measured (`bash bench/run.sh --parts dispatcher`, 2,000,000 tickets): fillfactor 100 kept
-- 0.1% of sales HOT, 70 kept 64%, 50 kept 93%; the dispatcher alone committed 113k, 133k
-- and 151k state changes/s against 118-120k before this migration.
--
-- An assignment still adds index entries (it sets agent_id): one of the two changes must
-- tell the queue apart from the held tickets.

ALTER TABLE tickets SET (fillfactor = 50);

CREATE INDEX tickets_queue_by_id ON tickets (id) WHERE agent_id IS NULL;
DROP INDEX tickets_unassigned_by_id;
ALTER INDEX tickets_queue_by_id RENAME TO tickets_unassigned_by_id;

CREATE INDEX tickets_by_agent ON tickets (agent_id, id) WHERE agent_id IS NOT NULL;
DROP INDEX tickets_held_by_agent;
DROP INDEX tickets_sold_by_agent;
