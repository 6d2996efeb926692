-- Stats history per node: every console of a fleet samples its own node's proxy into the
-- one database, so a sample is keyed by node as well as time. Samples from before are the
-- node's that sampled them, named '' (a lone Canopy's whole history).
ALTER TABLE stats_samples ADD COLUMN node TEXT NOT NULL DEFAULT '';
ALTER TABLE stats_samples DROP CONSTRAINT stats_samples_pkey;
ALTER TABLE stats_samples ADD PRIMARY KEY (node, at);

ALTER TABLE peer_samples ADD COLUMN node TEXT NOT NULL DEFAULT '';
ALTER TABLE peer_samples DROP CONSTRAINT peer_samples_pkey;
ALTER TABLE peer_samples ADD PRIMARY KEY (node, peer, at);

-- Why the node's own settings (node_settings) could not be applied over the version in
-- force (a port taken); NULL when they were, or never tried.
ALTER TABLE nodes ADD COLUMN own_settings_refused TEXT;
