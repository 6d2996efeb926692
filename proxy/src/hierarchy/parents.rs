//! The HTTP parents of one config version, each with its pooled client and counters.

use std::sync::Arc;

use crate::hierarchy::upstream::UpstreamClient;
use crate::stats::PeerStats;

/// An HTTP parent from the `parents` list, with its pooled client.
pub struct Parent {
    /// `host:port`, the name its counters are kept under.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub client: UpstreamClient,
    pub stats: Arc<PeerStats>,
}
