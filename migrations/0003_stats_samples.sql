-- The proxy's counters as the manager sampled them (cumulative, as the proxy reports them).
-- Rates are differences between samples; a counter that went down means the proxy
-- restarted. Samples older than a week are thinned to one per five minutes.
CREATE TABLE stats_samples (
    at                   INTEGER PRIMARY KEY, -- unix seconds
    requests             INTEGER NOT NULL,
    hits                 INTEGER NOT NULL,
    misses               INTEGER NOT NULL,
    bytes_from_cache     INTEGER NOT NULL,
    bytes_from_upstream  INTEGER NOT NULL,
    icp_queries_sent     INTEGER NOT NULL,
    icp_replies          INTEGER NOT NULL,
    icp_queries_received INTEGER NOT NULL
);

CREATE TABLE peer_samples (
    at                INTEGER NOT NULL,
    peer              TEXT    NOT NULL,
    up                INTEGER,           -- 1 up, 0 dead, NULL when the proxy does not say
    fetches           INTEGER NOT NULL,
    failures          INTEGER NOT NULL,
    bytes             INTEGER NOT NULL,
    icp_queries       INTEGER NOT NULL,
    icp_hits          INTEGER NOT NULL,
    icp_misses        INTEGER NOT NULL,
    icp_other_replies INTEGER NOT NULL,
    icp_timeouts      INTEGER NOT NULL,
    icp_reply_ms      REAL    NOT NULL,  -- recent ICP reply time (the average if no recent one); 0: none
    hits_served       INTEGER NOT NULL,
    false_hits        INTEGER NOT NULL,
    last_failure_at   TEXT,
    last_failure      TEXT,
    PRIMARY KEY (peer, at)
);
CREATE INDEX peer_samples_at ON peer_samples (at);
