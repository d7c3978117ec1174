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
-- Conflict when the new username is taken. A new password ($4) signs the user out everywhere
-- else: it revokes every token of theirs but the one that made the change ($7, the SHA-256 of
-- the caller's key when users change their own password; NULL when an admin changes it).
-- Deactivation ($6 false) revokes every token: reactivating a compromised account must not
-- bring its old sessions back.
WITH updated AS (
    UPDATE users
    SET username = coalesce($2, username),
        email = coalesce($3, email),
        password_hash = coalesce($4, password_hash),
        is_staff = coalesce($5, is_staff),
        is_active = coalesce($6, is_active)
    WHERE id = $1
    RETURNING id, username, email, is_staff, is_active, date_joined
), revoked AS (
    DELETE FROM api_tokens AS t
    USING updated AS u
    WHERE t.user_id = u.id
      AND (($4::text IS NOT NULL AND t.key_sha256 IS DISTINCT FROM $7::bytea)
           OR $6::boolean IS FALSE)
)
SELECT id, username, email, is_staff, is_active, date_joined FROM updated

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
