-- Every applied change is a new config version; rows are never updated except for their
-- state, so any earlier version can be shown, diffed and restored.
CREATE TABLE config_versions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at   TEXT    NOT NULL,
    author       TEXT    NOT NULL,
    summary      TEXT    NOT NULL,
    config       TEXT    NOT NULL,
    -- saved: not yet tried by the proxy; applied: the proxy ran it; rejected: it could not.
    state        TEXT    NOT NULL DEFAULT 'saved' CHECK (state IN ('saved', 'applied', 'rejected')),
    state_reason TEXT,
    state_at     TEXT
);
