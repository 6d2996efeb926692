-- The proxies that run on this database, each written by the node itself: one for a lone
-- Canopy, every node of a fleet on a shared PostgreSQL.
CREATE TABLE nodes (
    name           TEXT   PRIMARY KEY,
    http_listen    TEXT   NOT NULL,
    icp_listen     TEXT,
    -- Canopy's own version, as `canopy --version` says it.
    software       TEXT   NOT NULL,
    -- the config version in force on the node
    config_version BIGINT NOT NULL,
    -- running, or stopped when it shut down cleanly
    state          TEXT   NOT NULL CHECK (state IN ('running', 'stopped')),
    -- RFC 3339, UTC; a running node writes last_seen every few seconds
    started_at     TEXT   NOT NULL,
    last_seen      TEXT   NOT NULL
);

-- What each node did with each config version it tried: its own outcome, whatever the
-- others did.
CREATE TABLE node_versions (
    node    TEXT   NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,
    version BIGINT NOT NULL REFERENCES config_versions (id),
    outcome TEXT   NOT NULL CHECK (outcome IN ('applied', 'rejected')),
    reason  TEXT,
    at      TEXT   NOT NULL,
    PRIMARY KEY (node, version)
);

-- Settings one node holds apart from the fleet's versions (its addresses, ports, visible
-- name): laid over every version the node applies. Keys are limited to those in
-- canopy_config::nodes::PER_NODE.
CREATE TABLE node_settings (
    node  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (node, key)
);

-- A canary: while this holds a node, every version saved is held for that node alone
-- (config_versions.canary) until it is rolled out to every node. At most one row.
CREATE TABLE canary (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    node  TEXT   NOT NULL,
    since TEXT   NOT NULL
);
-- The node a version is held for; NULL once every node may apply it.
ALTER TABLE config_versions ADD COLUMN canary TEXT;
