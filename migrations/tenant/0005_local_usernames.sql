-- A local-mode user signs in by username: at most one live local user per username.
CREATE UNIQUE INDEX users_local_username ON users (username)
    WHERE status <> 'deleted' AND subject LIKE 'local:%';
