//! The answer to a peer's query, decided as Squid's icp_access and icpCheckUdpHit do: by
//! the querier's address first, then by what the cache holds.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Uri};

use crate::cache::policy;
use crate::cache::store::Store;
use crate::hierarchy::peers;
use crate::http::forward::cache_key;
use crate::icp::codec::{IcpMessage, IcpOpcode};
use crate::server::Runtime;
use crate::stats::IcpTotals;

/// The opcode answering `query` from `from`, counted.
pub fn answer(
    runtime: &Runtime,
    store: &Store,
    from: SocketAddr,
    query: &IcpMessage,
    icp: &IcpTotals,
) -> IcpOpcode {
    let opcode = if !may_ask(runtime, from) {
        IcpOpcode::Denied
    } else {
        match http_url(query.payload.url()) {
            None => IcpOpcode::Err,
            Some(uri) if holds_fresh(runtime, store, &uri) => IcpOpcode::Hit,
            Some(_) if will_not_fetch(runtime) => IcpOpcode::MissNofetch,
            Some(_) => IcpOpcode::Miss,
        }
    };
    count(icp, opcode);
    opcode
}

/// The answer to a query whose payload could not be read: ERR to those who may ask.
pub fn refuse_or_err(runtime: &Runtime, from: SocketAddr, icp: &IcpTotals) -> IcpOpcode {
    let opcode = if may_ask(runtime, from) {
        IcpOpcode::Err
    } else {
        IcpOpcode::Denied
    };
    count(icp, opcode);
    opcode
}

fn count(icp: &IcpTotals, opcode: IcpOpcode) {
    let counter = match opcode {
        IcpOpcode::Hit => &icp.answered_hit,
        IcpOpcode::MissNofetch => &icp.answered_miss_nofetch,
        IcpOpcode::Err => &icp.answered_err,
        IcpOpcode::Denied => &icp.answered_denied,
        _ => &icp.answered_miss,
    };
    counter.fetch_add(1, Relaxed);
}

/// Configured peers, and the children of `icp_allowed_clients`.
fn may_ask(runtime: &Runtime, from: SocketAddr) -> bool {
    let ip = peers::canonical(from.ip());
    peers::by_address(&runtime.peers, ip).is_some()
        || runtime.config.icp_allowed_clients.contains(ip)
}

/// An absolute `http://` URL, the only kind a cache holds for a peer.
fn http_url(url: &str) -> Option<Uri> {
    let uri: Uri = url.parse().ok()?;
    (uri.scheme_str() == Some("http") && uri.authority().is_some()).then_some(uri)
}

/// Held, and still fresh `icp_hit_fresh_for_s` from now: the peer's fetch will find it.
fn holds_fresh(runtime: &Runtime, store: &Store, uri: &Uri) -> bool {
    let Some(stored) = store.lookup(&cache_key(uri), &HeaderMap::new()) else {
        return false;
    };
    let left = policy::remaining_freshness(
        stored.status,
        &stored.headers,
        &stored.times,
        SystemTime::now(),
        &runtime.heuristics,
    );
    left >= Duration::from_secs(runtime.config.icp_hit_fresh_for_s)
}

/// This proxy will not fetch a miss: it may not go direct and no parent can take it.
fn will_not_fetch(runtime: &Runtime) -> bool {
    runtime.config.never_direct.0
        && runtime
            .parents
            .iter()
            .all(|parent| parent.stats.down.load(Relaxed))
        && runtime
            .peers
            .iter()
            .filter(|peer| !peer.is_sibling())
            .all(|peer| peer.stats.is_dead() || peer.stats.down.load(Relaxed))
}
