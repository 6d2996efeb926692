//! Counters of the proxy, in total and per peer, read into the snapshot `stats` returns.

pub mod clients;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use canopy_config::stats::{Failure, HtcpSnapshot, PeerSnapshot, PeerState, StatsSnapshot};

use crate::digest::peer_digest::{FetchGate, PeerDigest};
use crate::hierarchy::health::Health;
use crate::http::workers;
use crate::icp::codec::IcpOpcode;
use canopy_config::versions::{now_rfc3339, rfc3339};

/// Totals for the whole proxy. Relaxed atomics: each counter is independent.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: Counter,
    /// Hits on a stored response still fresh.
    pub hits_fresh: Counter,
    /// Hits on a stale stored response: accepted by the client's max-stale, served while
    /// revalidated in the background, or served because revalidation failed.
    pub hits_stale: Counter,
    pub hits_revalidated: Counter,
    pub misses: Counter,
    pub uncacheable: Counter,
    pub bytes_from_cache: Counter,
    pub bytes_from_upstream: Counter,
    pub denied_clients: Counter,
    /// Requests refused for where they were going: safe_ports, ssl_ports, this proxy
    /// itself, its console, loopback under deny_to_localhost.
    pub denied_destinations: Counter,
    pub tunnels: Counter,
    /// PURGE requests answered (200, 404 or 403).
    pub purges: Counter,
    pub errors: Counter,
    /// Requests sent on to another hop after one failed.
    pub retries: Counter,
    pub reloads_applied: AtomicU64,
    pub reloads_rejected: AtomicU64,
    pub timeouts: TimeoutCounts,
    pub icp: IcpTotals,
    pub htcp: HtcpTotals,
    /// Per client that asked us (ICP queries, HTTP requests of peers and ICP clients).
    pub clients: clients::Clients,
    peers: Mutex<BTreeMap<String, Arc<PeerStats>>>,
    /// When the last fetch of any peer's cache digest began, so fetches are spaced.
    pub peer_digest_gate: FetchGate,
}

/// A count the HTTP workers add to on every request. Each worker adds on its own cache
/// line, so the cores do not pass one line back and forth; reading sums the lines.
#[derive(Debug, Default)]
pub struct Counter([Lane; LANES]);

/// More lanes than workers only costs memory; workers past the last share lanes.
const LANES: usize = 8;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Lane(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0[workers::current() % LANES].0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.iter().map(|lane| lane.0.load(Relaxed)).sum()
    }
}

/// A timeout that fired, by what it guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// A client connection waited `client_idle_timeout_s` for a request.
    ClientIdle,
    /// A request's headers took longer than `request_timeout_s`.
    ClientRequest,
    /// A client connection reached `client_lifetime_s`.
    ClientLifetime,
    /// Connecting to a parent or origin took longer than `connect_timeout_ms`.
    UpstreamConnect,
    /// A parent or origin sent nothing for `read_timeout_ms`, before or during a response.
    UpstreamRead,
    /// A CONNECT tunnel carried nothing either way for `tunnel_idle_timeout_s`.
    TunnelIdle,
}

impl Timeout {
    pub const ALL: [Timeout; 6] = [
        Timeout::ClientIdle,
        Timeout::ClientRequest,
        Timeout::ClientLifetime,
        Timeout::UpstreamConnect,
        Timeout::UpstreamRead,
        Timeout::TunnelIdle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Timeout::ClientIdle => "client_idle",
            Timeout::ClientRequest => "client_request",
            Timeout::ClientLifetime => "client_lifetime",
            Timeout::UpstreamConnect => "upstream_connect",
            Timeout::UpstreamRead => "upstream_read",
            Timeout::TunnelIdle => "tunnel_idle",
        }
    }
}

/// How often each timeout fired. Plain atomics: a timeout is rare, no request adds to them.
#[derive(Debug, Default)]
pub struct TimeoutCounts([AtomicU64; Timeout::ALL.len()]);

impl TimeoutCounts {
    pub fn fired(&self, timeout: Timeout) {
        self.0[timeout as usize].fetch_add(1, Relaxed);
    }

    /// Every kind, those that never fired as 0, by name.
    fn by_name(&self) -> BTreeMap<String, u64> {
        Timeout::ALL
            .into_iter()
            .map(|t| (t.as_str().to_owned(), self.0[t as usize].load(Relaxed)))
            .collect()
    }
}

/// ICP datagrams this proxy received, and the answers its responder gave.
#[derive(Debug, Default)]
pub struct IcpTotals {
    pub queries_received: AtomicU64,
    pub answered_hit: AtomicU64,
    pub answered_miss: AtomicU64,
    pub answered_miss_nofetch: AtomicU64,
    pub answered_err: AtomicU64,
    pub answered_denied: AtomicU64,
    /// Too short, a length that disagrees, another version, an unknown opcode.
    pub dropped: AtomicU64,
    /// Replies from no peer, or to no query of ours.
    pub replies_ignored: AtomicU64,
}

impl IcpTotals {
    /// The answers given, by opcode name.
    fn answers(&self) -> BTreeMap<String, u64> {
        [
            (IcpOpcode::Hit, &self.answered_hit),
            (IcpOpcode::Miss, &self.answered_miss),
            (IcpOpcode::MissNofetch, &self.answered_miss_nofetch),
            (IcpOpcode::Denied, &self.answered_denied),
            (IcpOpcode::Err, &self.answered_err),
        ]
        .into_iter()
        .map(|(opcode, counter)| (opcode.to_string(), counter.load(Relaxed)))
        .collect()
    }
}

/// HTCP datagrams this proxy received, and what its responder did with them.
#[derive(Debug, Default)]
pub struct HtcpTotals {
    pub tst_received: AtomicU64,
    pub answered_hit: AtomicU64,
    pub answered_miss: AtomicU64,
    /// TST and CLR from senders `htcp_access` / `htcp_clr_access` do not allow: no reply,
    /// as Squid.
    pub denied: AtomicU64,
    pub clr_received: AtomicU64,
    /// CLRs that removed something.
    pub clr_purged: AtomicU64,
    /// Datagrams that could not be read, and opcodes Canopy does not serve (NOP, MON, SET).
    pub dropped: AtomicU64,
    /// Replies from no peer, or to no query of ours.
    pub replies_ignored: AtomicU64,
    /// CLRs sent to peers (on PURGE and on invalidation).
    pub clr_sent: AtomicU64,
    /// CLRs received and passed on to `forward_clr` peers.
    pub clr_forwarded: AtomicU64,
}

impl HtcpTotals {
    fn snapshot(&self) -> HtcpSnapshot {
        let load = |c: &AtomicU64| c.load(Relaxed);
        HtcpSnapshot {
            tst_received: load(&self.tst_received),
            answered_hit: load(&self.answered_hit),
            answered_miss: load(&self.answered_miss),
            denied: load(&self.denied),
            clr_received: load(&self.clr_received),
            clr_purged: load(&self.clr_purged),
            dropped: load(&self.dropped),
            replies_ignored: load(&self.replies_ignored),
            clr_sent: load(&self.clr_sent),
            clr_forwarded: load(&self.clr_forwarded),
        }
    }
}

/// How a peer was asked whether it holds an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryMethod {
    Icp,
    Htcp,
}

/// Counters of one peer or HTTP parent; kept across reloads by its name.
#[derive(Debug, Default)]
pub struct PeerStats {
    pub fetches: AtomicU64,
    pub failures: AtomicU64,
    pub bytes: AtomicU64,
    last_failure: Mutex<Option<Failure>>,
    /// Up or down as a place to fetch from (TCP), for HTTP parents and peers.
    pub health: Health,
    pub icp_queries: AtomicU64,
    pub icp_hit: AtomicU64,
    pub icp_miss: AtomicU64,
    pub icp_miss_nofetch: AtomicU64,
    pub icp_denied: AtomicU64,
    pub icp_err: AtomicU64,
    pub icp_timeouts: AtomicU64,
    /// Replies that came after their round was over (counted by opcode too).
    pub icp_late: AtomicU64,
    /// Objects it said HIT for and then served us.
    pub hits_served: AtomicU64,
    /// Objects an ICP HIT from it predicted and it then could not serve.
    pub false_hits_icp: AtomicU64,
    /// HIT_OBJ replies: sent to it (its queries asked), and received from it (counted as
    /// HIT replies too).
    pub hit_obj_sent: AtomicU64,
    pub hit_obj_received: AtomicU64,
    /// Set for a peer that takes ICP queries: its liveness is tracked and shown.
    pub icp_tracked: AtomicBool,
    /// Misses its digest said it held and then could not serve.
    pub false_hits_digest: AtomicU64,
    /// Its cache digest and the state of fetching it.
    pub digest: PeerDigest,
    icp_health: Mutex<IcpHealth>,
    /// HTCP TST queries, and their replies; liveness and reply times are shared with ICP's
    /// (a peer is asked one way or the other).
    pub htcp_queries: AtomicU64,
    pub htcp_hit: AtomicU64,
    pub htcp_miss: AtomicU64,
    pub htcp_timeouts: AtomicU64,
    /// Objects it said HTCP HIT for and then could not serve.
    pub false_hits_htcp: AtomicU64,
}

/// Whether a peer is alive to ICP (answering queries) or dead, and its reply times.
#[derive(Debug, Default)]
struct IcpHealth {
    /// The first query since its last reply: a peer silent this long past the dead-peer
    /// timeout is dead.
    first_unanswered: Option<(Instant, SystemTime)>,
    dead_after: Duration,
    up_since: Option<SystemTime>,
    /// Smoothed reply time (weight 1/8, as TCP smooths its RTT).
    average_ms: Option<f64>,
    recent_ms: Option<f64>,
    last_query: Option<SystemTime>,
    last_reply: Option<SystemTime>,
}

impl IcpHealth {
    fn dead_at(&self, now: Instant) -> bool {
        self.first_unanswered
            .is_some_and(|(since, _)| now.duration_since(since) >= self.dead_after)
    }
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

    fn icp_health(&self) -> std::sync::MutexGuard<'_, IcpHealth> {
        self.icp_health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A query went to this peer; `dead_after` is the dead-peer timeout in force.
    pub fn query_sent(&self, dead_after: Duration) {
        self.icp_queries.fetch_add(1, Relaxed);
        self.awaiting_reply(dead_after);
    }

    /// An HTCP TST went to this peer.
    pub fn htcp_query_sent(&self, dead_after: Duration) {
        self.htcp_queries.fetch_add(1, Relaxed);
        self.awaiting_reply(dead_after);
    }

    fn awaiting_reply(&self, dead_after: Duration) {
        let mut health = self.icp_health();
        health.dead_after = dead_after;
        health.last_query = Some(SystemTime::now());
        health
            .first_unanswered
            .get_or_insert((Instant::now(), SystemTime::now()));
    }

    /// Any reply from the peer, in time or late: it is alive.
    pub fn reply_seen(&self) {
        let mut health = self.icp_health();
        if health.dead_at(Instant::now()) || health.up_since.is_none() {
            health.up_since = Some(SystemTime::now());
        }
        health.first_unanswered = None;
        health.last_reply = Some(SystemTime::now());
    }

    fn count_reply(&self, opcode: IcpOpcode) {
        if opcode == IcpOpcode::HitObj {
            self.hit_obj_received.fetch_add(1, Relaxed);
        }
        let counter = match opcode {
            IcpOpcode::Hit | IcpOpcode::HitObj => &self.icp_hit,
            IcpOpcode::MissNofetch => &self.icp_miss_nofetch,
            IcpOpcode::Denied => &self.icp_denied,
            IcpOpcode::Err => &self.icp_err,
            _ => &self.icp_miss,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// A reply to a round already over, where it was counted as a timeout: it is a reply.
    pub fn reply_late(&self, opcode: IcpOpcode) {
        self.count_reply(opcode);
        self.icp_late.fetch_add(1, Relaxed);
        self.icp_timeouts.fetch_sub(1, Relaxed);
        self.reply_seen();
    }

    /// A reply that answered a query still waiting, `elapsed` after it was sent.
    pub fn reply_in_time(&self, opcode: IcpOpcode, elapsed: Duration) {
        self.count_reply(opcode);
        self.reply_timed(elapsed);
    }

    /// A round ended without this peer's reply.
    pub fn timed_out(&self, method: QueryMethod) {
        match method {
            QueryMethod::Icp => &self.icp_timeouts,
            QueryMethod::Htcp => &self.htcp_timeouts,
        }
        .fetch_add(1, Relaxed);
    }

    fn count_htcp_reply(&self, hit: bool) {
        if hit { &self.htcp_hit } else { &self.htcp_miss }.fetch_add(1, Relaxed);
    }

    /// An HTCP TST reply to a query still waiting, `elapsed` after it was sent.
    pub fn htcp_reply_in_time(&self, hit: bool, elapsed: Duration) {
        self.count_htcp_reply(hit);
        self.reply_timed(elapsed);
    }

    /// An HTCP TST reply to a round already over, where it was counted as a timeout.
    pub fn htcp_reply_late(&self, hit: bool) {
        self.count_htcp_reply(hit);
        self.htcp_timeouts.fetch_sub(1, Relaxed);
        self.reply_seen();
    }

    fn reply_timed(&self, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        let mut health = self.icp_health();
        health.recent_ms = Some(ms);
        health.average_ms = Some(match health.average_ms {
            Some(average) => average + (ms - average) / 8.0,
            None => ms,
        });
        drop(health);
        self.reply_seen();
    }

    /// Whether the peer has been silent past the dead-peer timeout.
    pub fn is_dead(&self) -> bool {
        self.icp_health().dead_at(Instant::now())
    }

    /// The smoothed reply time, once it has replied.
    pub fn average_reply(&self) -> Option<Duration> {
        self.icp_health()
            .average_ms
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
    }

    pub fn snapshot(&self, name: &str) -> PeerSnapshot {
        let load = |c: &AtomicU64| c.load(Relaxed);
        let icp = self.icp_health();
        let tracked = self.icp_tracked.load(Relaxed);
        let dead = icp.dead_at(Instant::now());
        let since = if dead {
            icp.first_unanswered.map(|(_, at)| at + icp.dead_after)
        } else {
            icp.up_since
        };
        let replies = if tracked {
            [
                (IcpOpcode::Hit, &self.icp_hit),
                (IcpOpcode::Miss, &self.icp_miss),
                (IcpOpcode::MissNofetch, &self.icp_miss_nofetch),
                (IcpOpcode::Denied, &self.icp_denied),
                (IcpOpcode::Err, &self.icp_err),
            ]
            .into_iter()
            .map(|(opcode, counter)| (opcode.to_string(), load(counter)))
            .collect()
        } else {
            BTreeMap::new()
        };
        PeerSnapshot {
            name: name.to_owned(),
            fetches: load(&self.fetches),
            failures: load(&self.failures),
            bytes: load(&self.bytes),
            last_failure: self.last_failure.lock().ok().and_then(|f| f.clone()),
            health: self.health.snapshot(),
            state: tracked.then_some(if dead { PeerState::Dead } else { PeerState::Up }),
            state_since: since.filter(|_| tracked).map(rfc3339),
            icp_queries: load(&self.icp_queries),
            icp_replies: replies,
            icp_timeouts: load(&self.icp_timeouts),
            icp_late_replies: load(&self.icp_late),
            icp_reply_ms_avg: icp.average_ms.unwrap_or_default(),
            icp_reply_ms_recent: icp.recent_ms.unwrap_or_default(),
            last_query_at: icp.last_query.map(rfc3339),
            last_reply_at: icp.last_reply.map(rfc3339),
            hits_served: load(&self.hits_served),
            false_hits: load(&self.false_hits_icp)
                + load(&self.false_hits_htcp)
                + load(&self.false_hits_digest),
            false_hits_icp: load(&self.false_hits_icp),
            icp_hit_obj_sent: load(&self.hit_obj_sent),
            icp_hit_obj_received: load(&self.hit_obj_received),
            htcp_queries: load(&self.htcp_queries),
            htcp_hits: load(&self.htcp_hit),
            htcp_misses: load(&self.htcp_miss),
            htcp_timeouts: load(&self.htcp_timeouts),
            false_hits_htcp: load(&self.false_hits_htcp),
            false_hits_digest: load(&self.false_hits_digest),
            digest: self.digest.snapshot(SystemTime::now(), rfc3339),
        }
    }
}

impl Stats {
    /// The counters of the peer called `name`, created on first use.
    pub fn peer(&self, name: &str) -> Arc<PeerStats> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.entry(name.to_owned()).or_default().clone()
    }

    /// The counters of the peer called `name`, if it ever had any.
    pub fn existing_peer(&self, name: &str) -> Option<Arc<PeerStats>> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.get(name).cloned()
    }

    pub fn snapshot(&self, objects: u64, bytes_held: u64) -> StatsSnapshot {
        let load = |c: &AtomicU64| c.load(Relaxed);
        let get = Counter::get;
        let hits = get(&self.hits_fresh) + get(&self.hits_stale) + get(&self.hits_revalidated);
        let requests = get(&self.requests);
        let (cache_bytes, upstream_bytes) =
            (get(&self.bytes_from_cache), get(&self.bytes_from_upstream));
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        StatsSnapshot {
            requests,
            hits_fresh: get(&self.hits_fresh),
            hits_stale: get(&self.hits_stale),
            hits_revalidated: get(&self.hits_revalidated),
            misses: get(&self.misses),
            uncacheable: get(&self.uncacheable),
            bytes_from_cache: cache_bytes,
            bytes_from_upstream: upstream_bytes,
            hit_ratio: ratio(hits, requests),
            byte_hit_ratio: ratio(cache_bytes, cache_bytes + upstream_bytes),
            objects,
            bytes_held,
            memory_hits: hits,
            disk: None,
            denied_clients: get(&self.denied_clients),
            denied_destinations: get(&self.denied_destinations),
            tunnels: get(&self.tunnels),
            purges: get(&self.purges),
            errors: get(&self.errors),
            retries: get(&self.retries),
            reloads_applied: load(&self.reloads_applied),
            reloads_rejected: load(&self.reloads_rejected),
            timeouts: self.timeouts.by_name(),
            peers: peers.iter().map(|(n, p)| p.snapshot(n)).collect(),
            icp_queries_received: load(&self.icp.queries_received),
            icp_answers: self.icp.answers(),
            icp_dropped: load(&self.icp.dropped),
            icp_replies_ignored: load(&self.icp.replies_ignored),
            clients: self.clients.snapshot(rfc3339),
            memory_capacity: 0,
            memory_evictions: 0,
            memory_hit_ratio: ratio(hits, requests),
            htcp: self.htcp.snapshot(),
            own_digest: None,
        }
    }
}

pub(crate) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_count_both_kinds_of_hit() {
        let stats = Stats::default();
        stats.requests.add(4);
        stats.hits_fresh.add(1);
        stats.hits_revalidated.add(1);
        stats.bytes_from_cache.add(300);
        stats.bytes_from_upstream.add(100);
        let s = stats.snapshot(0, 0);
        assert_eq!(s.hit_ratio, 0.5);
        assert_eq!(s.byte_hit_ratio, 0.75);
    }

    #[test]
    fn a_counter_sums_what_every_thread_added() {
        let counter = Arc::new(Counter::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| counter.add(2)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        // As the last worker would add.
        counter.0[LANES - 1].0.fetch_add(5, Relaxed);
        assert_eq!(counter.get(), 8005);
    }

    #[test]
    fn a_silent_peer_is_dead_after_the_timeout_and_any_reply_revives_it() {
        let peer = PeerStats::default();
        assert_eq!(peer.snapshot("p").state, None, "not an ICP peer yet");
        peer.icp_tracked.store(true, Relaxed);
        assert!(!peer.is_dead());
        peer.query_sent(Duration::ZERO);
        assert!(peer.is_dead(), "silent past a zero timeout");
        assert_eq!(peer.snapshot("p").state, Some(PeerState::Dead));
        peer.reply_seen();
        assert!(!peer.is_dead());
        peer.query_sent(Duration::from_secs(3600));
        assert!(!peer.is_dead(), "silent, but not for long");
        peer.reply_in_time(IcpOpcode::Hit, Duration::from_millis(8));
        peer.query_sent(Duration::from_secs(3600));
        peer.reply_in_time(IcpOpcode::Miss, Duration::from_millis(16));
        let s = peer.snapshot("p");
        assert_eq!(s.icp_queries, 3);
        assert_eq!((s.icp_replies["HIT"], s.icp_replies["MISS"]), (1, 1));
        assert_eq!(s.icp_replies["DENIED"], 0);
        assert_eq!(s.icp_reply_ms_recent, 16.0);
        assert_eq!(s.icp_reply_ms_avg, 9.0, "8 + (16 - 8) / 8");
        assert_eq!(s.state, Some(PeerState::Up));
        assert!(s.last_reply_at.is_some() && s.state_since.is_some());
    }

    #[test]
    fn every_timeout_kind_is_shown_even_at_zero() {
        let stats = Stats::default();
        stats.timeouts.fired(Timeout::TunnelIdle);
        stats.timeouts.fired(Timeout::TunnelIdle);
        let s = stats.snapshot(0, 0);
        assert_eq!(s.timeouts.len(), Timeout::ALL.len());
        assert_eq!(s.timeouts["tunnel_idle"], 2);
        assert_eq!(s.timeouts["client_idle"], 0);
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
