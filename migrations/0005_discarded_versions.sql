-- A rejected version the admin discarded ('discarded'): kept in the history with the
-- reason it was rejected, never applied or offered for editing again. SQLite cannot change
-- a CHECK constraint in place, so the table is rebuilt with the same rows and ids.
CREATE TABLE config_versions_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at   TEXT    NOT NULL,
    author       TEXT    NOT NULL,
    summary      TEXT    NOT NULL,
    config       TEXT    NOT NULL,
    -- saved: not yet tried by the proxy; applied: the proxy ran it; rejected: it could not;
    -- discarded: rejected, then set aside by the admin.
    state        TEXT    NOT NULL DEFAULT 'saved'
                         CHECK (state IN ('saved', 'applied', 'rejected', 'discarded')),
    state_reason TEXT,
    state_at     TEXT
);
INSERT INTO config_versions_new (id, created_at, author, summary, config, state, state_reason, state_at)
    SELECT id, created_at, author, summary, config, state, state_reason, state_at
    FROM config_versions;
-- Ids are never reused: the new table counts on from where the old one was.
UPDATE sqlite_sequence SET seq = (SELECT seq FROM sqlite_sequence WHERE name = 'config_versions')
    WHERE name = 'config_versions_new';
DROP TABLE config_versions;
ALTER TABLE config_versions_new RENAME TO config_versions;
