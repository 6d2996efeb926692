//! The responder's side, per client: what each peer or child cache asked of this proxy
//! (ICP queries, HTTP requests) and what it was answered, by source address.
//!
//! ICP comes over UDP, whose source addresses anyone can forge, so the table is bounded:
//! when it is full, a new address takes the place of the least active one, whose counts
//! move to a row that sums every client no longer tracked. Configured peers are never
//! displaced, nor is a client whose HTTP connection holds its counters; so the rows always
//! add up to the totals.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use canopy_config::stats::ClientSnapshot;

use crate::icp::codec::IcpOpcode;

/// How a snapshot writes a time.
pub type Format = fn(SystemTime) -> String;

/// How many clients are tracked one by one.
pub const CAPACITY: usize = 256;

/// The opcodes a responder answers with, in the order their counters are kept.
const ANSWERS: [IcpOpcode; 5] = [
    IcpOpcode::Hit,
    IcpOpcode::Miss,
    IcpOpcode::MissNofetch,
    IcpOpcode::Denied,
    IcpOpcode::Err,
];

/// Whether a client is one of the configured peers: those are never displaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Peer,
    Other,
}

/// Counters of one client, or of every client no longer tracked.
#[derive(Debug, Default)]
pub struct ClientCounters {
    answers: [AtomicU64; ANSWERS.len()],
    objects: AtomicU64,
    hits: AtomicU64,
    bytes: AtomicU64,
    /// Milliseconds since the epoch; 0 for never.
    last_seen_ms: AtomicU64,
}

impl ClientCounters {
    /// One HTTP response sent to the client, `bytes` of body.
    pub fn served(&self, from_cache: bool, bytes: u64) {
        self.objects.fetch_add(1, Relaxed);
        if from_cache {
            self.hits.fetch_add(1, Relaxed);
        }
        self.bytes.fetch_add(bytes, Relaxed);
        self.seen();
    }

    fn answered(&self, opcode: IcpOpcode) {
        let slot = ANSWERS.iter().position(|o| *o == opcode).unwrap_or(1);
        self.answers[slot].fetch_add(1, Relaxed);
        self.seen();
    }

    fn seen(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_seen_ms.fetch_max(now, Relaxed);
    }

    /// Queries and responses: what decides which client is displaced first.
    fn activity(&self) -> u64 {
        self.answers.iter().map(|a| a.load(Relaxed)).sum::<u64>() + self.objects.load(Relaxed)
    }

    /// Adds `other`'s counts to these.
    fn absorb(&self, other: &ClientCounters) {
        for (mine, theirs) in self.answers.iter().zip(&other.answers) {
            mine.fetch_add(theirs.load(Relaxed), Relaxed);
        }
        for (mine, theirs) in [
            (&self.objects, &other.objects),
            (&self.hits, &other.hits),
            (&self.bytes, &other.bytes),
        ] {
            mine.fetch_add(theirs.load(Relaxed), Relaxed);
        }
        self.last_seen_ms
            .fetch_max(other.last_seen_ms.load(Relaxed), Relaxed);
    }

    fn snapshot(&self, address: Option<IpAddr>, format_time: Format) -> ClientSnapshot {
        let icp_answers: std::collections::BTreeMap<String, u64> = ANSWERS
            .iter()
            .zip(&self.answers)
            .map(|(opcode, n)| (opcode.to_string(), n.load(Relaxed)))
            .collect();
        let last_seen = self.last_seen_ms.load(Relaxed);
        ClientSnapshot {
            address,
            peer: None,
            icp_queries: icp_answers.values().sum(),
            icp_answers,
            objects: self.objects.load(Relaxed),
            hits: self.hits.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            last_seen_at: (last_seen > 0)
                .then(|| format_time(UNIX_EPOCH + std::time::Duration::from_millis(last_seen))),
        }
    }
}

#[derive(Debug)]
struct Entry {
    counters: Arc<ClientCounters>,
    kind: Kind,
}

/// The clients of this proxy, at most [`CAPACITY`] one by one, the rest summed.
#[derive(Debug)]
pub struct Clients {
    table: Mutex<HashMap<IpAddr, Entry>>,
    capacity: usize,
    untracked: Arc<ClientCounters>,
}

impl Default for Clients {
    fn default() -> Clients {
        Clients::with_capacity(CAPACITY)
    }
}

impl Clients {
    pub fn with_capacity(capacity: usize) -> Clients {
        Clients {
            table: Mutex::new(HashMap::with_capacity(capacity)),
            capacity,
            untracked: Arc::default(),
        }
    }

    /// The responder answered an ICP query from `ip` with `opcode`.
    pub fn answered(&self, ip: IpAddr, kind: Kind, opcode: IcpOpcode) {
        self.with_counters(ip, kind, |counters| counters.answered(opcode));
    }

    /// The counters an HTTP connection from `ip` adds its responses to, taken once per
    /// connection: while it holds them, the client is not displaced.
    pub fn for_connection(&self, ip: IpAddr, kind: Kind) -> Arc<ClientCounters> {
        self.with_counters(ip, kind, Arc::clone)
    }

    fn with_counters<T>(
        &self,
        ip: IpAddr,
        kind: Kind,
        f: impl FnOnce(&Arc<ClientCounters>) -> T,
    ) -> T {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = table.get_mut(&ip) {
            entry.kind = kind;
            return f(&entry.counters);
        }
        if table.len() >= self.capacity && !self.displace_one(&mut table) {
            return f(&self.untracked);
        }
        let entry = table.entry(ip).or_insert(Entry {
            counters: Arc::default(),
            kind,
        });
        f(&entry.counters)
    }

    /// Moves the least active client that may be displaced (the longest unseen among
    /// equals) into the untracked row; false when every client is a peer or held.
    fn displace_one(&self, table: &mut HashMap<IpAddr, Entry>) -> bool {
        // Counters are only handed out under the lock: a count of one is the table's alone.
        let victim = table
            .iter()
            .filter(|(_, e)| e.kind == Kind::Other && Arc::strong_count(&e.counters) == 1)
            .min_by_key(|(_, e)| (e.counters.activity(), e.counters.last_seen_ms.load(Relaxed)))
            .map(|(ip, _)| *ip);
        let Some(entry) = victim.and_then(|ip| table.remove(&ip)) else {
            return false;
        };
        self.untracked.absorb(&entry.counters);
        true
    }

    /// Every tracked client by address, then the untracked row when it counted anything;
    /// times written with `format_time`.
    pub fn snapshot(&self, format_time: Format) -> Vec<ClientSnapshot> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<ClientSnapshot> = table
            .iter()
            .map(|(ip, e)| e.counters.snapshot(Some(*ip), format_time))
            .collect();
        // Read under the lock: a client displaced meanwhile would be counted twice.
        let untracked = self.untracked.snapshot(None, format_time);
        drop(table);
        rows.sort_by_key(|row| row.address);
        if untracked.icp_queries > 0 || untracked.objects > 0 {
            rows.push(untracked);
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn snapshot(clients: &Clients) -> Vec<ClientSnapshot> {
        clients.snapshot(|at| format!("{at:?}"))
    }

    fn row(clients: &Clients, address: Option<IpAddr>) -> ClientSnapshot {
        snapshot(clients)
            .into_iter()
            .find(|r| r.address == address)
            .unwrap_or_else(|| panic!("no row for {address:?}"))
    }

    #[test]
    fn answers_and_objects_are_counted_per_client() {
        let clients = Clients::default();
        clients.answered(ip(1), Kind::Peer, IcpOpcode::Hit);
        clients.answered(ip(1), Kind::Peer, IcpOpcode::Miss);
        clients.answered(ip(2), Kind::Other, IcpOpcode::Denied);
        let connection = clients.for_connection(ip(1), Kind::Peer);
        connection.served(true, 100);
        connection.served(false, 20);
        let one = row(&clients, Some(ip(1)));
        assert_eq!(one.icp_queries, 2);
        assert_eq!((one.icp_answers["HIT"], one.icp_answers["MISS"]), (1, 1));
        assert_eq!((one.objects, one.hits, one.bytes), (2, 1, 120));
        assert!(one.last_seen_at.is_some());
        let two = row(&clients, Some(ip(2)));
        assert_eq!((two.icp_queries, two.icp_answers["DENIED"]), (1, 1));
        assert_eq!(
            snapshot(&clients).len(),
            2,
            "no untracked row while nothing was"
        );
    }

    #[test]
    fn a_flood_of_addresses_stays_bounded_and_still_adds_up() {
        let clients = Clients::with_capacity(4);
        clients.answered(ip(1), Kind::Peer, IcpOpcode::Miss);
        for _ in 0..3 {
            clients.answered(ip(2), Kind::Other, IcpOpcode::Hit);
        }
        for last in 100..=255 {
            clients.answered(ip(last), Kind::Other, IcpOpcode::Denied);
        }
        let rows = snapshot(&clients);
        assert_eq!(
            rows.len(),
            5,
            "four tracked and the untracked row: {rows:?}"
        );
        assert_eq!(row(&clients, Some(ip(1))).icp_queries, 1, "a peer stays");
        assert_eq!(
            row(&clients, Some(ip(2))).icp_queries,
            3,
            "the busiest stays"
        );
        assert_eq!(rows.iter().map(|r| r.icp_queries).sum::<u64>(), 1 + 3 + 156);
        let untracked = row(&clients, None);
        assert_eq!(untracked.icp_answers["DENIED"], 156 - 2);
        assert_eq!(rows.last().unwrap().address, None, "the untracked row last");
    }

    #[test]
    fn a_client_whose_connection_holds_its_counters_is_not_displaced() {
        let clients = Clients::with_capacity(2);
        let held = clients.for_connection(ip(1), Kind::Other);
        clients.answered(ip(2), Kind::Peer, IcpOpcode::Miss);
        clients.answered(ip(3), Kind::Other, IcpOpcode::Miss);
        held.served(false, 7);
        assert_eq!(row(&clients, Some(ip(1))).bytes, 7);
        assert_eq!(
            row(&clients, None).icp_answers["MISS"],
            1,
            "nobody to displace"
        );
        drop(held);
        clients.answered(ip(3), Kind::Other, IcpOpcode::Miss);
        assert!(snapshot(&clients).iter().any(|r| r.address == Some(ip(3))));
        let untracked = row(&clients, None);
        assert_eq!(
            (untracked.objects, untracked.bytes),
            (1, 7),
            "ip 1 moved there"
        );
    }
}
