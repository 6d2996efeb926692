-- Console accounts. Passwords are kept only as argon2 hashes (PHC strings).
CREATE TABLE accounts (
    name            TEXT    PRIMARY KEY,
    password_hash   TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    -- Failed logins since the last good one, shown to the administrator.
    failed_logins   INTEGER NOT NULL DEFAULT 0,
    last_failed_at  TEXT,
    last_login_at   TEXT
);

-- A logged-in browser: the cookie holds the id, every form holds the csrf token.
CREATE TABLE sessions (
    id          TEXT    PRIMARY KEY,
    account     TEXT    NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    csrf        TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    -- Unix seconds.
    expires_at  INTEGER NOT NULL
);

-- Every failed login, per name tried (accounts or not); never reset, for /metrics.
CREATE TABLE login_failures (
    name        TEXT    PRIMARY KEY,
    count       INTEGER NOT NULL,
    last_at     TEXT    NOT NULL
);
