//! What the proxy's `stats` command returns: totals, and each peer's counters and health.
//! The live counters that fill these are the proxy's.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What `stats` returns over the control socket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub hits_fresh: u64,
    /// Hits on stale stored responses (stale-while-revalidate, stale-if-error).
    #[serde(default)]
    pub hits_stale: u64,
    pub hits_revalidated: u64,
    pub misses: u64,
    pub uncacheable: u64,
    pub bytes_from_cache: u64,
    pub bytes_from_upstream: u64,
    pub hit_ratio: f64,
    pub byte_hit_ratio: f64,
    /// Objects and bytes in memory (the hot tier).
    pub objects: u64,
    pub bytes_held: u64,
    /// Hits served from memory: every hit but those of [`DiskSnapshot::hits_served`].
    #[serde(default)]
    pub memory_hits: u64,
    /// The disk tier; `None` when it is off.
    #[serde(default)]
    pub disk: Option<DiskSnapshot>,
    pub denied_clients: u64,
    /// Requests refused for where they were going: safe_ports, ssl_ports, this proxy
    /// itself, its console, loopback under deny_to_localhost.
    #[serde(default)]
    pub denied_destinations: u64,
    pub tunnels: u64,
    /// PURGE requests answered (200, 404 or 403).
    #[serde(default)]
    pub purges: u64,
    pub errors: u64,
    pub retries: u64,
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
    /// Timeouts that fired, by kind: `client_idle`, `client_request`, `client_lifetime`,
    /// `upstream_connect`, `upstream_read`, `tunnel_idle`.
    #[serde(default)]
    pub timeouts: BTreeMap<String, u64>,
    pub peers: Vec<PeerSnapshot>,
    /// ICP queries this proxy received from peers and children.
    #[serde(default)]
    pub icp_queries_received: u64,
    /// Answers this proxy gave, by opcode name as in RFC 2186 without the `ICP_OP_` prefix
    /// (`HIT`, `MISS`, `MISS_NOFETCH`, `DENIED`, `ERR`).
    #[serde(default)]
    pub icp_answers: BTreeMap<String, u64>,
    /// Datagrams dropped unanswered: too short, a length that disagrees, another version,
    /// an unknown opcode.
    #[serde(default)]
    pub icp_dropped: u64,
    /// Replies that answer no query we remember: from no peer, from a peer's address but
    /// another port, or with a request number or URL we did not ask.
    #[serde(default)]
    pub icp_replies_ignored: u64,
    /// Who asked this proxy: each client that sent ICP queries, and each configured peer or
    /// ICP client that sent HTTP requests, by address; the row without an address sums
    /// those no longer tracked one by one (the table is bounded). The ICP queries of all
    /// rows add up to `icp_queries_received`.
    #[serde(default)]
    pub clients: Vec<ClientSnapshot>,
    /// The memory tier's bound (`cache_mem`) and the objects it evicted to keep within it.
    #[serde(default)]
    pub memory_capacity: u64,
    #[serde(default)]
    pub memory_evictions: u64,
    /// Memory hits per request (the disk's share is [`DiskSnapshot::hit_ratio`]; the two
    /// add up to `hit_ratio`).
    #[serde(default)]
    pub memory_hit_ratio: f64,
    #[serde(default)]
    pub htcp: HtcpSnapshot,
    /// This proxy's own cache digest, as served to peers; `None` before the first build
    /// and while `digest_generation` is off.
    #[serde(default)]
    pub own_digest: Option<OwnDigestSnapshot>,
}

/// This proxy's own cache digest: what the last build put in it, and how often peers took
/// it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OwnDigestSnapshot {
    /// URLs put in at the last build.
    pub entries: u64,
    /// The entries it is sized for, and the mask's bits for each.
    pub capacity: u64,
    pub bits_per_entry: u8,
    /// Octets served: the 128-octet header and the mask.
    pub size: u64,
    /// Percentage of the mask's bits that are on (peers refuse more than 65).
    pub fill_percent: f64,
    pub built_at: String,
    /// Seconds since the last build.
    pub age_s: u64,
    /// How long the last build took.
    pub build_ms: u64,
    /// Its `Last-Modified`: when its content last changed; a rebuild that changed nothing
    /// keeps it, so a peer's If-Modified-Since is answered 304.
    pub modified_at: String,
    /// Its `Expires`: when the next build is due.
    pub expires_at: String,
    /// Times it was sent whole (200) to a peer, and times a peer's If-Modified-Since was
    /// answered 304 Not Modified.
    pub served: u64,
    pub not_modified: u64,
}

/// What one client (a peer or a child cache) asked of this proxy, and what it was answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientSnapshot {
    /// None for the row that sums the clients the bounded table no longer holds.
    pub address: Option<IpAddr>,
    /// The configured peer at this address, if any.
    pub peer: Option<String>,
    pub icp_queries: u64,
    /// Answers by opcode name, as in [`StatsSnapshot::icp_answers`]; they add up to
    /// `icp_queries`.
    pub icp_answers: BTreeMap<String, u64>,
    /// HTTP responses sent to it (counted for peers and `icp_allowed_clients` only).
    pub objects: u64,
    /// Of the objects, those served from the cache.
    pub hits: u64,
    /// Body bytes of those responses.
    pub bytes: u64,
    pub last_seen_at: Option<String>,
}

/// The disk tier (`cache_dir`), as `stats` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskSnapshot {
    /// Why the disk tier is not in use although on (it could not be opened at start);
    /// the counters are then zero.
    pub closed: Option<String>,
    pub objects: u64,
    pub bytes: u64,
    /// Its bound: `cache_dir_size`, or a tenth of the free space at start if less.
    pub capacity: u64,
    /// Requests answered from disk.
    pub hits_served: u64,
    /// Lookups that found an object on disk, and those that did not.
    pub lookups_found: u64,
    pub lookups_missed: u64,
    /// Bodies opened for reading, and objects written whole.
    pub reads: u64,
    pub writes: u64,
    pub evictions: u64,
    /// Faults, by kind: no space left, another I/O error, bytes that fail their checksum.
    pub faults_full: u64,
    pub faults_io: u64,
    pub faults_corrupt: u64,
    /// Calls skipped (a lookup, a body opened, a 304's headers) because the disk tier's
    /// queue was full.
    pub skipped: u64,
    /// Requests answered from disk per request.
    pub hit_ratio: f64,
    pub state: StoreState,
    /// The newest fault: when, and what failed.
    pub last_fault: Option<Failure>,
    /// Objects not written because too many writes were under way or waiting.
    pub writes_dropped: u64,
}

/// How the disk tier stands (off is no [`DiskSnapshot`] at all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreState {
    /// No fault in the last [`StoreState::FAULTED_FOR_S`] seconds.
    #[default]
    Ok,
    /// A fault within the last [`StoreState::FAULTED_FOR_S`] seconds: requests it could not
    /// serve went to memory or upstream.
    Faulted,
    /// On, but it could not be opened at start (see [`DiskSnapshot::closed`]).
    Closed,
}

impl StoreState {
    /// How long a fault keeps the store shown as faulted: long enough for a look at the
    /// dashboard to catch a burst, short enough that one corrupt file is not a lasting alarm.
    pub const FAULTED_FOR_S: u64 = 300;

    pub fn as_str(self) -> &'static str {
        match self {
            StoreState::Ok => "ok",
            StoreState::Faulted => "faulted",
            StoreState::Closed => "closed",
        }
    }
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
    /// Replies by opcode name, as in [`StatsSnapshot::icp_answers`], late ones included:
    /// queries = replies + timeouts.
    #[serde(default)]
    pub icp_replies: BTreeMap<String, u64>,
    #[serde(default)]
    pub icp_timeouts: u64,
    /// Of the replies, those that came after their round was over.
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
    /// Hits predicted at this peer that turned out to be misses, whatever predicted them.
    #[serde(default)]
    pub false_hits: u64,
    /// Of those, the ones an ICP HIT predicted.
    #[serde(default)]
    pub false_hits_icp: u64,
    /// ICP HIT_OBJ replies (an object inline) sent to this peer, and received from it.
    #[serde(default)]
    pub icp_hit_obj_sent: u64,
    #[serde(default)]
    pub icp_hit_obj_received: u64,
    /// HTCP TST queries sent (to peers asked over HTCP instead of ICP); queries = hits +
    /// misses + timeouts.
    #[serde(default)]
    pub htcp_queries: u64,
    #[serde(default)]
    pub htcp_hits: u64,
    #[serde(default)]
    pub htcp_misses: u64,
    #[serde(default)]
    pub htcp_timeouts: u64,
    /// Of the false hits, the ones an HTCP HIT predicted.
    #[serde(default)]
    pub false_hits_htcp: u64,
    /// Of the false hits, the ones its cache digest predicted.
    #[serde(default)]
    pub false_hits_digest: u64,
    /// Its cache digest, once it has been fetched (or tried).
    #[serde(default)]
    pub digest: Option<DigestSnapshot>,
}

/// The ways a hit at a peer is predicted, each with its false hits counted apart, so an
/// admin can see which suits a link; `/metrics` labels them with these names.
pub const FALSE_HIT_METHODS: [&str; 3] = ["icp", "htcp", "digest"];

impl PeerSnapshot {
    /// False hits by the method that predicted them, in [`FALSE_HIT_METHODS`]' order.
    pub fn false_hits_by_method(&self) -> [(&'static str, u64); FALSE_HIT_METHODS.len()] {
        [
            (FALSE_HIT_METHODS[0], self.false_hits_icp),
            (FALSE_HIT_METHODS[1], self.false_hits_htcp),
            (FALSE_HIT_METHODS[2], self.false_hits_digest),
        ]
    }
}

/// A peer's cache digest as this proxy last fetched it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DigestSnapshot {
    /// Octets of the digest, header included; 0 when the last fetch failed.
    pub size: u64,
    /// Objects the peer says it put in.
    pub entries: u64,
    pub capacity: u64,
    /// Percentage of the bits that are on.
    pub fill_percent: f64,
    /// Seconds since it was received.
    pub age_s: Option<u64>,
    pub expires_at: Option<String>,
    pub last_fetch_at: String,
    /// "ok", or why the last fetch failed.
    pub last_fetch_outcome: String,
    pub next_fetch_at: Option<String>,
    pub fetches: u64,
    pub fetch_failures: u64,
    /// Of the fetches, those the peer answered 304 Not Modified, keeping the digest held.
    #[serde(default)]
    pub not_modified: u64,
}

/// What this proxy's HTCP responder received and did, and the CLRs it sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HtcpSnapshot {
    pub tst_received: u64,
    pub answered_hit: u64,
    pub answered_miss: u64,
    /// Refused by `htcp_access` or `htcp_clr_access`: no reply.
    pub denied: u64,
    pub clr_received: u64,
    pub clr_purged: u64,
    pub dropped: u64,
    pub replies_ignored: u64,
    pub clr_sent: u64,
    /// CLRs received and passed on to `forward_clr` peers.
    #[serde(default)]
    pub clr_forwarded: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub at: String,
    pub reason: String,
}

/// How a parent stands, as `stats` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSnapshot {
    pub down: bool,
    pub down_since: Option<String>,
    pub down_reason: Option<String>,
    pub down_by_hand: bool,
    /// Who took it down, when it was by hand.
    #[serde(default)]
    pub down_by: Option<String>,
}
