-- Peers and HTTP parents an administrator took down by hand (`canopy peer down`, the
-- console's Take down), as Traffic Server's `traffic_ctl host down` keeps its hosts: the
-- proxy reads them at start, so a restart keeps them down until they are brought up.
CREATE TABLE peer_maintenance (
    -- the peer's name, or an HTTP parent's host:port
    name     TEXT PRIMARY KEY,
    reason   TEXT NOT NULL,
    -- the console account, or the OS user of the `canopy` command
    taken_by TEXT NOT NULL,
    -- RFC 3339, UTC
    taken_at TEXT NOT NULL
);
