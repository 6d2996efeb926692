-- Stats history per node: every console of a fleet samples its own node's proxy into the
-- one database, so a sample is keyed by node as well as time. Samples from before are the
-- node's that sampled them, named '' (a lone Canopy's whole history).
CREATE TABLE stats_samples_per_node (
    at                   INTEGER NOT NULL,
    requests             INTEGER NOT NULL,
    hits                 INTEGER NOT NULL,
    misses               INTEGER NOT NULL,
    bytes_from_cache     INTEGER NOT NULL,
    bytes_from_upstream  INTEGER NOT NULL,
    icp_queries_sent     INTEGER NOT NULL,
    icp_replies          INTEGER NOT NULL,
    icp_queries_received INTEGER NOT NULL,
    node                 TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (node, at)
);
INSERT INTO stats_samples_per_node
    SELECT at, requests, hits, misses, bytes_from_cache, bytes_from_upstream,
           icp_queries_sent, icp_replies, icp_queries_received, '' FROM stats_samples;
DROP TABLE stats_samples;
ALTER TABLE stats_samples_per_node RENAME TO stats_samples;

CREATE TABLE peer_samples_per_node (
    at                INTEGER NOT NULL,
    peer              TEXT    NOT NULL,
    up                INTEGER,
    fetches           INTEGER NOT NULL,
    failures          INTEGER NOT NULL,
    bytes             INTEGER NOT NULL,
    icp_queries       INTEGER NOT NULL,
    icp_hits          INTEGER NOT NULL,
    icp_misses        INTEGER NOT NULL,
    icp_other_replies INTEGER NOT NULL,
    icp_timeouts      INTEGER NOT NULL,
    icp_reply_ms      REAL    NOT NULL,
    hits_served       INTEGER NOT NULL,
    false_hits        INTEGER NOT NULL,
    last_failure_at   TEXT,
    last_failure      TEXT,
    node              TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (node, peer, at)
);
INSERT INTO peer_samples_per_node
    SELECT at, peer, up, fetches, failures, bytes, icp_queries, icp_hits, icp_misses,
           icp_other_replies, icp_timeouts, icp_reply_ms, hits_served, false_hits,
           last_failure_at, last_failure, '' FROM peer_samples;
DROP TABLE peer_samples;
ALTER TABLE peer_samples_per_node RENAME TO peer_samples;
CREATE INDEX peer_samples_at ON peer_samples (at);

-- Why the node's own settings (node_settings) could not be applied over the version in
-- force (a port taken); NULL when they were, or never tried.
ALTER TABLE nodes ADD COLUMN own_settings_refused TEXT;
