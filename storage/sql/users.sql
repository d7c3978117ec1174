-- Users as the CRUD API sees them (users_insert, used on creation too, is in auth.sql).
-- A user's password hash never leaves storage through these queries.

-- users_by_id --
-- One user, with its agent's id (null when it has none).
SELECT u.id, u.username, u.email, u.is_staff, u.is_active, u.date_joined, a.id AS agent_id
FROM users u
LEFT JOIN agents a ON a.user_id = u.id
WHERE u.id = $1

-- users_count --
-- How many users there are, for a page's count.
SELECT count(*) FROM users

-- users_page --
-- One page of users in id order ($1 limit, $2 offset, after id $3).
SELECT id, username, email, is_staff, is_active, date_joined
FROM users
WHERE id > $3
ORDER BY id
LIMIT $1 OFFSET $2

-- users_update --
-- Change the fields given (a null keeps the value); no row when the user is gone.
-- Conflict when the new username is taken. A new password or a deactivation revokes tokens
-- too: api_tokens_revoke_for_user, next, in the same transaction.
UPDATE users
SET username = coalesce($2, username),
    email = coalesce($3, email),
    password_hash = coalesce($4, password_hash),
    is_staff = coalesce($5, is_staff),
    is_active = coalesce($6, is_active)
WHERE id = $1
RETURNING id, username, email, is_staff, is_active, date_joined

-- api_tokens_revoke_for_user --
-- Revoke a user's tokens, all but one ($2: the caller's own when users change their own
-- password; NULL keeps none). A statement of its own after users_update, in its
-- transaction: the update waited for any login holding the user's row (api_tokens_insert,
-- FOR SHARE), and this statement's fresh snapshot sees the token that login committed.
DELETE FROM api_tokens WHERE user_id = $1 AND key_sha256 IS DISTINCT FROM $2::bytea

-- users_delete --
-- Delete a user and, by cascade, its tokens; Conflict while an agent row still refers to it.
DELETE FROM users WHERE id = $1 RETURNING id

-- users_admin_removal_lock --
-- Taken first by every transaction that could leave no active admin: two admins removing
-- each other at once then run one after the other, and the second sees the first's change.
SELECT pg_advisory_xact_lock(hashtextextended('ticket-system: the last active admin', 0))

-- users_is_active_admin --
-- Whether this user is an active admin now (false when there is no such user).
SELECT coalesce((SELECT is_staff AND is_active FROM users WHERE id = $1), false)

-- users_other_active_admins_count --
-- Active admins other than this user.
SELECT count(*) FROM users WHERE is_staff AND is_active AND id <> $1
