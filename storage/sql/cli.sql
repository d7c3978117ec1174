-- The `tickets` command line's own queries (createsuperuser, create-agent). Names follow
-- <table>_<verb>[_<guard>][_many] and are unique across storage/sql/. Users themselves are
-- created with `users_insert` (auth.sql), the same statement the API uses.

-- users_username_taken --
-- Whether a username is already in use (asked before prompting for the rest).
SELECT EXISTS (SELECT 1 FROM users WHERE username = $1)

-- agents_insert_by_username --
-- Make an existing user an agent: no row when the user is unknown, Conflict when it
-- already is one (agents.user_id is unique).
INSERT INTO agents (user_id, capacity)
SELECT id, $2 FROM users WHERE username = $1
RETURNING id, capacity
