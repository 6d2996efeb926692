//! Counters of the proxy, in total and per peer, and the snapshot `stats` returns.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::hierarchy::health::{Health, HealthSnapshot};
use crate::versions::now_rfc3339;

/// Totals for the whole proxy. Relaxed atomics: each counter is independent.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub hits_fresh: AtomicU64,
    pub hits_revalidated: AtomicU64,
    pub misses: AtomicU64,
    pub uncacheable: AtomicU64,
    pub bytes_from_cache: AtomicU64,
    pub bytes_from_upstream: AtomicU64,
    pub denied_clients: AtomicU64,
    pub tunnels: AtomicU64,
    pub errors: AtomicU64,
    /// Requests sent on to another hop after one failed.
    pub retries: AtomicU64,
    pub reloads_applied: AtomicU64,
    pub reloads_rejected: AtomicU64,
    peers: Mutex<BTreeMap<String, Arc<PeerStats>>>,
}

/// Counters of one peer or HTTP parent; kept across reloads by its name.
#[derive(Debug, Default)]
pub struct PeerStats {
    pub fetches: AtomicU64,
    pub failures: AtomicU64,
    pub bytes: AtomicU64,
    last_failure: Mutex<Option<Failure>>,
    /// Up or down, for HTTP parents.
    pub health: Health,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub at: String,
    pub reason: String,
}

impl PeerStats {
    pub fn record_failure(&self, reason: impl Into<String>) {
        self.failures.fetch_add(1, Relaxed);
        let failure = Failure {
            at: now_rfc3339(),
            reason: reason.into(),
        };
        if let Ok(mut last) = self.last_failure.lock() {
            *last = Some(failure);
        }
    }

    pub fn snapshot(&self, name: &str) -> PeerSnapshot {
        PeerSnapshot {
            name: name.to_owned(),
            fetches: self.fetches.load(Relaxed),
            failures: self.failures.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            last_failure: self.last_failure.lock().ok().and_then(|f| f.clone()),
            health: self.health.snapshot(),
            ..PeerSnapshot::default()
        }
    }
}

impl Stats {
    /// The counters of the peer called `name`, created on first use.
    pub fn peer(&self, name: &str) -> Arc<PeerStats> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.entry(name.to_owned()).or_default().clone()
    }

    pub fn snapshot(&self, objects: u64, bytes_held: u64) -> StatsSnapshot {
        let load = |c: &AtomicU64| c.load(Relaxed);
        let hits = load(&self.hits_fresh) + load(&self.hits_revalidated);
        let requests = load(&self.requests);
        let (cache_bytes, upstream_bytes) = (
            load(&self.bytes_from_cache),
            load(&self.bytes_from_upstream),
        );
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        StatsSnapshot {
            requests,
            hits_fresh: load(&self.hits_fresh),
            hits_revalidated: load(&self.hits_revalidated),
            misses: load(&self.misses),
            uncacheable: load(&self.uncacheable),
            bytes_from_cache: cache_bytes,
            bytes_from_upstream: upstream_bytes,
            hit_ratio: ratio(hits, requests),
            byte_hit_ratio: ratio(cache_bytes, cache_bytes + upstream_bytes),
            objects,
            bytes_held,
            denied_clients: load(&self.denied_clients),
            tunnels: load(&self.tunnels),
            errors: load(&self.errors),
            retries: load(&self.retries),
            reloads_applied: load(&self.reloads_applied),
            reloads_rejected: load(&self.reloads_rejected),
            peers: peers.iter().map(|(n, p)| p.snapshot(n)).collect(),
            ..StatsSnapshot::default()
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// What `stats` returns over the control socket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub hits_fresh: u64,
    pub hits_revalidated: u64,
    pub misses: u64,
    pub uncacheable: u64,
    pub bytes_from_cache: u64,
    pub bytes_from_upstream: u64,
    pub hit_ratio: f64,
    pub byte_hit_ratio: f64,
    pub objects: u64,
    pub bytes_held: u64,
    pub denied_clients: u64,
    pub tunnels: u64,
    pub errors: u64,
    pub retries: u64,
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
    pub peers: Vec<PeerSnapshot>,
    /// ICP queries this proxy received from peers and children.
    #[serde(default)]
    pub icp_queries_received: u64,
    /// Answers this proxy gave, by opcode name as in RFC 2186 without the `ICP_OP_` prefix
    /// (`HIT`, `MISS`, `MISS_NOFETCH`, `DENIED`, `ERR`).
    #[serde(default)]
    pub icp_answers: BTreeMap<String, u64>,
}

/// Whether a peer is answering (DESIGN.md §4: dead after the dead-peer timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    Up,
    Dead,
}

/// One peer's counters. The ICP fields stay at their defaults for a peer never queried
/// (and for an HTTP parent), so older proxies and the manager agree on the format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerSnapshot {
    pub name: String,
    /// HTTP requests sent through this peer.
    pub fetches: u64,
    /// TCP connect and fetch failures.
    pub failures: u64,
    pub bytes: u64,
    pub last_failure: Option<Failure>,
    #[serde(flatten)]
    pub health: HealthSnapshot,
    /// None when the proxy does not track this peer's liveness (no ICP).
    #[serde(default)]
    pub state: Option<PeerState>,
    #[serde(default)]
    pub state_since: Option<String>,
    #[serde(default)]
    pub icp_queries: u64,
    /// Replies by opcode name, as in [`StatsSnapshot::icp_answers`].
    #[serde(default)]
    pub icp_replies: BTreeMap<String, u64>,
    #[serde(default)]
    pub icp_timeouts: u64,
    /// Replies that came after the wait was over, or with an unknown request number.
    #[serde(default)]
    pub icp_late_replies: u64,
    #[serde(default)]
    pub icp_reply_ms_avg: f64,
    #[serde(default)]
    pub icp_reply_ms_recent: f64,
    #[serde(default)]
    pub last_query_at: Option<String>,
    #[serde(default)]
    pub last_reply_at: Option<String>,
    /// Cache hits this peer served us.
    #[serde(default)]
    pub hits_served: u64,
    /// ICP HITs that turned out to be misses.
    #[serde(default)]
    pub false_hits: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_count_both_kinds_of_hit() {
        let stats = Stats::default();
        stats.requests.store(4, Relaxed);
        stats.hits_fresh.store(1, Relaxed);
        stats.hits_revalidated.store(1, Relaxed);
        stats.bytes_from_cache.store(300, Relaxed);
        stats.bytes_from_upstream.store(100, Relaxed);
        let s = stats.snapshot(0, 0);
        assert_eq!(s.hit_ratio, 0.5);
        assert_eq!(s.byte_hit_ratio, 0.75);
    }

    #[test]
    fn peer_counters_keep_the_last_failure() {
        let stats = Stats::default();
        stats.peer("p:1").record_failure("connection refused");
        stats.peer("p:1").fetches.fetch_add(1, Relaxed);
        let s = stats.snapshot(0, 0);
        assert_eq!(s.peers[0].failures, 1);
        assert_eq!(s.peers[0].fetches, 1);
        assert_eq!(
            s.peers[0].last_failure.as_ref().unwrap().reason,
            "connection refused"
        );
    }
}
