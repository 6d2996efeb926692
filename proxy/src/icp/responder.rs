//! The answer to a peer's query, decided as Squid's icp_access and icpCheckUdpHit do: by
//! the querier's address first, then by what the cache holds.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, Uri};

use crate::cache::key::cache_key;
use crate::cache::policy;
use crate::cache::store::Store;
use crate::hierarchy::peers;
use crate::icp::codec::{IcpMessage, IcpOpcode};
use crate::runtime::Runtime;
use crate::stats::clients::Kind;
use crate::stats::{PeerStats, Stats};

/// The opcode answering `query` from `from`, counted in total and for its sender.
pub fn answer(
    runtime: &Runtime,
    store: &Store,
    from: SocketAddr,
    query: &IcpMessage,
    stats: &Stats,
) -> IcpOpcode {
    let asker = asker(runtime, from);
    let opcode = if asker == Asker::Stranger {
        IcpOpcode::Denied
    } else {
        match http_url(query.payload.url()) {
            None => IcpOpcode::Err,
            Some(uri) if holds_fresh(runtime, store, &uri) => IcpOpcode::Hit,
            Some(_) if will_not_fetch(runtime) => IcpOpcode::MissNofetch,
            Some(_) => IcpOpcode::Miss,
        }
    };
    count(stats, from, asker, opcode);
    opcode
}

/// The answer to a query whose payload could not be read: ERR to those who may ask.
pub fn refuse_or_err(runtime: &Runtime, from: SocketAddr, stats: &Stats) -> IcpOpcode {
    let asker = asker(runtime, from);
    let opcode = if asker == Asker::Stranger {
        IcpOpcode::Denied
    } else {
        IcpOpcode::Err
    };
    count(stats, from, asker, opcode);
    opcode
}

fn count(stats: &Stats, from: SocketAddr, asker: Asker, opcode: IcpOpcode) {
    let icp = &stats.icp;
    let counter = match opcode {
        IcpOpcode::Hit => &icp.answered_hit,
        IcpOpcode::MissNofetch => &icp.answered_miss_nofetch,
        IcpOpcode::Err => &icp.answered_err,
        IcpOpcode::Denied => &icp.answered_denied,
        _ => &icp.answered_miss,
    };
    counter.fetch_add(1, Relaxed);
    let kind = match asker {
        Asker::Peer => Kind::Peer,
        Asker::Child | Asker::Stranger => Kind::Other,
    };
    stats
        .clients
        .answered(peers::canonical(from.ip()), kind, opcode);
}

/// Who sent a query, as icp_access would see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asker {
    /// A configured peer.
    Peer,
    /// A child of `icp_allowed_clients`.
    Child,
    Stranger,
}

fn asker(runtime: &Runtime, from: SocketAddr) -> Asker {
    let ip = peers::canonical(from.ip());
    if peers::by_address(&runtime.peers, ip).is_some() {
        Asker::Peer
    } else if runtime.config.icp_allowed_clients.contains(ip) {
        Asker::Child
    } else {
        Asker::Stranger
    }
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
        &stored.headers(),
        &stored.times(),
        SystemTime::now(),
        &runtime.heuristics,
        &runtime.targets,
    );
    left >= Duration::from_secs(runtime.config.icp_hit_fresh_for_s)
}

/// This proxy will not fetch a miss: the admin said so, or it may not go direct and no
/// parent can take it now.
fn will_not_fetch(runtime: &Runtime) -> bool {
    let now = Instant::now();
    let unusable = |stats: &PeerStats| !stats.health.available(now, runtime.retry_time);
    runtime.config.icp_hits_only.0
        || runtime.config.never_direct.0
            && runtime.parents.iter().all(|parent| unusable(&parent.stats))
            && runtime
                .peers
                .iter()
                .filter(|peer| !peer.is_sibling())
                .all(|peer| peer.stats.is_dead() || unusable(&peer.stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;
    use http::{HeaderValue, StatusCode};

    use crate::cache::policy::StoredTimes;
    use crate::cache::store::Stored;
    use canopy_config::config::{Config, Peer};

    fn peer(host: &str) -> Peer {
        Peer {
            name: host.replace('.', "-"),
            host: host.to_owned(),
            ..Peer::default()
        }
    }

    fn runtime(edit: impl FnOnce(&mut Config)) -> Runtime {
        let mut config = Config::default();
        config.peers.push(peer("10.0.0.2"));
        config.icp_allowed_clients = "192.168.0.0/16".parse().unwrap();
        edit(&mut config);
        Runtime::for_tests(config)
    }

    fn store_fresh_for(store: &Store, url: &str, max_age: u64) {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_str(&format!("max-age={max_age}")).unwrap(),
        );
        let now = SystemTime::now();
        store.insert(
            url,
            Stored::new(
                StatusCode::OK,
                headers,
                Bytes::from_static(b"x"),
                StoredTimes {
                    request_time: now,
                    response_time: now,
                },
                None,
                &[],
            ),
        );
    }

    fn ask(runtime: &Runtime, store: &Store, from: &str, url: &str) -> IcpOpcode {
        let from: SocketAddr = from.parse().unwrap();
        answer(
            runtime,
            store,
            from,
            &IcpMessage::query(1, url),
            &Stats::default(),
        )
    }

    #[test]
    fn peers_and_allowed_children_are_answered_and_strangers_denied() {
        let (runtime, store) = (runtime(|_| {}), Store::new(1 << 20));
        let url = "http://example.com/";
        assert_eq!(ask(&runtime, &store, "10.0.0.2:3130", url), IcpOpcode::Miss);
        assert_eq!(ask(&runtime, &store, "10.0.0.2:9999", url), IcpOpcode::Miss);
        assert_eq!(
            ask(&runtime, &store, "192.168.4.4:3130", url),
            IcpOpcode::Miss
        );
        assert_eq!(
            ask(&runtime, &store, "10.0.0.3:3130", url),
            IcpOpcode::Denied
        );
        assert_eq!(
            ask(&runtime, &store, "[::ffff:10.0.0.2]:3130", url),
            IcpOpcode::Miss
        );
    }

    #[test]
    fn every_answer_is_counted_for_the_address_that_asked() {
        let (runtime, store, stats) = (runtime(|_| {}), Store::new(1 << 20), Stats::default());
        let url = IcpMessage::query(1, "http://example.com/");
        for from in ["10.0.0.2:3130", "[::ffff:10.0.0.2]:3130", "10.0.0.3:3130"] {
            answer(&runtime, &store, from.parse().unwrap(), &url, &stats);
        }
        refuse_or_err(&runtime, "192.168.4.4:3130".parse().unwrap(), &stats);
        let clients = stats.snapshot(0, 0).clients;
        let by = |ip: [u8; 4]| {
            let ip = std::net::IpAddr::from(ip);
            clients.iter().find(|c| c.address == Some(ip)).unwrap()
        };
        assert_eq!(
            by([10, 0, 0, 2]).icp_answers["MISS"],
            2,
            "one client, v4 or mapped"
        );
        assert_eq!(by([10, 0, 0, 3]).icp_answers["DENIED"], 1);
        assert_eq!(by([192, 168, 4, 4]).icp_answers["ERR"], 1);
        assert_eq!(clients.len(), 3);
    }

    #[test]
    fn hit_only_for_objects_fresh_long_enough() {
        let (runtime, store) = (runtime(|_| {}), Store::new(1 << 20));
        store_fresh_for(&store, "http://example.com/long", 3600);
        store_fresh_for(&store, "http://example.com/short", 10);
        let from = "10.0.0.2:3130";
        assert_eq!(
            ask(&runtime, &store, from, "http://EXAMPLE.com/long"),
            IcpOpcode::Hit
        );
        assert_eq!(
            ask(&runtime, &store, from, "http://example.com/short"),
            IcpOpcode::Miss
        );
        let store = store;
        let eager = self::runtime(|c| c.icp_hit_fresh_for_s = 5);
        assert_eq!(
            ask(&eager, &store, from, "http://example.com/short"),
            IcpOpcode::Hit
        );
    }

    #[test]
    fn bad_urls_get_err_and_no_fetching_gets_miss_nofetch() {
        let (runtime, store) = (runtime(|_| {}), Store::new(1 << 20));
        for bad in ["", "not a url", "/relative", "ftp://example.com/"] {
            assert_eq!(
                ask(&runtime, &store, "10.0.0.2:3130", bad),
                IcpOpcode::Err,
                "{bad:?}"
            );
        }
        let stuck = self::runtime(|c| c.never_direct.0 = true);
        assert_eq!(
            ask(&stuck, &store, "10.0.0.2:3130", "http://example.com/"),
            IcpOpcode::MissNofetch
        );
        let with_parent = self::runtime(|c| {
            c.never_direct.0 = true;
            c.parents = "10.0.0.9:3128;".parse().unwrap();
        });
        assert_eq!(
            ask(&with_parent, &store, "10.0.0.2:3130", "http://example.com/"),
            IcpOpcode::Miss
        );
        let told = self::runtime(|c| c.icp_hits_only.0 = true);
        assert_eq!(
            ask(&told, &store, "10.0.0.2:3130", "http://example.com/"),
            IcpOpcode::MissNofetch
        );
    }
}
