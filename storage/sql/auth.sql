-- Logins and tokens. Blocks open with `-- name --` and a description; names follow
-- <table>_<verb>[_<guard>][_many] and are unique across storage/sql/.

-- users_insert --
-- Create a user; the username is unique (Conflict on duplicates).
INSERT INTO users (username, email, password_hash, is_staff)
VALUES ($1, $2, $3, $4)
RETURNING id, username, email, is_staff, is_active, date_joined

-- users_credentials_by_username --
-- What a login needs to check a password.
SELECT id, password_hash, is_active FROM users WHERE username = $1

-- users_password_hash_update --
-- Re-hash on login when the stored parameters are below the current ones: only if the hash
-- is still the one checked ($3). A password changed meanwhile must not be overwritten with
-- the old one, re-hashed.
UPDATE users SET password_hash = $2 WHERE id = $1 AND password_hash = $3 RETURNING id

-- api_tokens_insert --
-- Store a new token's SHA-256 (never the key itself), for a user still active with the
-- password just checked ($3, the stored hash); nothing when either changed meanwhile. FOR
-- SHARE orders it against a password change or deactivation (users.sql): that waits for
-- this insert to commit and then revokes the token in a statement of its own, or this
-- insert waits for that and finds the row changed.
INSERT INTO api_tokens (user_id, key_sha256)
SELECT u.id, $2
FROM (SELECT id FROM users WHERE id = $1 AND is_active AND password_hash = $3 FOR SHARE) AS u
RETURNING id

-- api_tokens_delete_by_hash --
-- Revoke one token.
DELETE FROM api_tokens WHERE key_sha256 = $1

-- auth_principal_by_token_hash --
-- The caller behind a token: its user and, when it has one, its agent.
SELECT t.key_sha256, u.id AS user_id, u.username, u.is_staff, u.is_active,
       a.id AS agent_id, a.is_active AS agent_is_active
FROM api_tokens t
JOIN users u ON u.id = t.user_id
LEFT JOIN agents a ON a.user_id = u.id
WHERE t.key_sha256 = $1

-- auth_principals_by_token_hashes --
-- The callers behind many tokens at once: the cache's periodic revalidation of keys in use.
SELECT t.key_sha256, u.id AS user_id, u.username, u.is_staff, u.is_active,
       a.id AS agent_id, a.is_active AS agent_is_active
FROM api_tokens t
JOIN users u ON u.id = t.user_id
LEFT JOIN agents a ON a.user_id = u.id
WHERE t.key_sha256 = ANY($1::bytea[])
