-- One definition of "this agent may trade" (fetch and sell, and count as the queue's
-- capacity): the agent is active, its user is active, and the user is no admin (0007,
-- 0008). It was written out in each query that needed it: the dispatcher's snapshot, its
-- read of a new agent and of a changed one, and the `stats` counts, which must agree with
-- the dispatcher. The trigger of 0008 fires on exactly the user columns read here.
--
-- LANGUAGE sql, one expression, IMMUTABLE: the planner inlines it, so it costs what the
-- expression written out did.
CREATE FUNCTION agent_can_trade(agent agents, owner users) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT agent.is_active AND owner.is_active AND NOT owner.is_staff $$;
