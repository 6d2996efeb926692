//! The answer to a peer's query, decided as Squid's icp_access and icpCheckUdpHit do: by
//! the querier's address first, then by what the cache holds, in memory or on disk (whose
//! tier keeps in memory until when each object without Vary is fresh: no disk read here);
//! and, as Squid 1.1's icpCheckUdpHitObj did, whether a HIT carries the object inline.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, SystemTime};

use http::{HeaderMap, StatusCode, Uri};

use crate::cache::disk_tier::DiskTier;
use crate::cache::key::cache_key;
use crate::cache::store::{Store, Stored};
use crate::hierarchy::peers;
use crate::icp::codec::{IcpMessage, IcpOpcode, HEADER_LEN, ICP_FLAG_HIT_OBJ, MAX_DATAGRAM_LEN};
use crate::icp::hit_obj;
use crate::runtime::{HeldForPeers, Runtime};
use crate::stats::clients::Kind;
use crate::stats::{PeerStats, Stats};

/// The reply to `query` from `from`, counted in total and for its sender (a HIT_OBJ as a
/// HIT, and apart for the peer it went to).
pub fn answer(
    runtime: &Runtime,
    store: &Store,
    disk: Option<&DiskTier>,
    from: SocketAddr,
    query: &IcpMessage,
    stats: &Stats,
) -> IcpMessage {
    let asker = asker(runtime, from);
    let url = query.payload.url();
    let mut object = None;
    let opcode = if asker == Asker::Stranger {
        IcpOpcode::Denied
    } else {
        match http_url(url) {
            None => IcpOpcode::Err,
            Some(uri) => {
                match runtime.fresh_for_peers(store, disk, &cache_key(&uri), &HeaderMap::new()) {
                    Some(HeldForPeers::InMemory(stored)) => {
                        object = inline_object(runtime, query, &stored);
                        IcpOpcode::Hit
                    }
                    // Not sent inline from disk.
                    Some(HeldForPeers::OnDisk) => IcpOpcode::Hit,
                    None if will_not_fetch(runtime) => IcpOpcode::MissNofetch,
                    None => IcpOpcode::Miss,
                }
            }
        }
    };
    count(stats, from, asker, opcode);
    match object {
        Some(object) => {
            if let Some(peer) = peers::by_address(&runtime.peers, peers::canonical(from.ip())) {
                peer.stats.hit_obj_sent.fetch_add(1, Relaxed);
            }
            IcpMessage::hit_obj(query.request_number, url, object)
        }
        None => IcpMessage::reply(opcode, query.request_number, url),
    }
}

/// The object for a HIT_OBJ reply: the query asked for it, `icp_hit_obj` is on, and the
/// fresh response is a 200 without Vary (the querier cannot tell which variant it wants)
/// that fits `icp_hit_obj_max_bytes` and the datagram.
fn inline_object(runtime: &Runtime, query: &IcpMessage, stored: &Stored) -> Option<Vec<u8>> {
    let config = &runtime.config;
    let asked = query.options & ICP_FLAG_HIT_OBJ != 0;
    if !asked || !config.icp_hit_obj.0 || stored.status != StatusCode::OK || stored.vary().is_some()
    {
        return None;
    }
    let max = usize::try_from(config.icp_hit_obj_max_bytes).unwrap_or(usize::MAX);
    // The URL, its NUL and the object's 16-bit size share the datagram with the object.
    let room = MAX_DATAGRAM_LEN - HEADER_LEN - query.payload.url().len() - 1 - 2;
    let limit = max.min(room);
    if stored.body.len() >= limit {
        return None;
    }
    let object = hit_obj::write(stored, SystemTime::now());
    (object.len() <= limit).then_some(object)
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
    use http::HeaderValue;

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
            None,
            from,
            &IcpMessage::query(1, url),
            &Stats::default(),
        )
        .opcode
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
            answer(&runtime, &store, None, from.parse().unwrap(), &url, &stats);
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

    #[test]
    fn hit_obj_only_when_asked_allowed_fresh_small_and_not_varying() {
        let store = Store::new(1 << 20);
        store_fresh_for(&store, "http://example.com/long", 3600);
        let on = runtime(|c| c.icp_hit_obj.0 = true);
        let reply = |runtime: &Runtime, url: &str, flags: u32| {
            let mut query = IcpMessage::query(9, url);
            query.options = flags;
            answer(
                runtime,
                &store,
                None,
                "10.0.0.2:3130".parse().unwrap(),
                &query,
                &Stats::default(),
            )
        };
        let url = "http://example.com/long";
        let inline = reply(&on, url, ICP_FLAG_HIT_OBJ);
        assert_eq!(
            (inline.opcode, inline.request_number),
            (IcpOpcode::HitObj, 9)
        );
        let crate::icp::codec::IcpPayload::HitObj { object, .. } = &inline.payload else {
            panic!("{inline:?}");
        };
        let back = hit_obj::read(object, 4096, &HeaderMap::new(), &[]).expect("a whole response");
        assert_eq!(back.body, "x");
        assert_eq!(on.peers[0].stats.hit_obj_sent.load(Relaxed), 1);
        // Squid never sets the flag: plain HIT.
        assert_eq!(reply(&on, url, 0).opcode, IcpOpcode::Hit);
        let off = runtime(|_| {});
        assert_eq!(reply(&off, url, ICP_FLAG_HIT_OBJ).opcode, IcpOpcode::Hit);
        let tiny = runtime(|c| {
            c.icp_hit_obj.0 = true;
            c.icp_hit_obj_max_bytes = 20;
        });
        assert_eq!(reply(&tiny, url, ICP_FLAG_HIT_OBJ).opcode, IcpOpcode::Hit);
        store_fresh_for(&store, "http://example.com/short", 10);
        let short = reply(&on, "http://example.com/short", ICP_FLAG_HIT_OBJ);
        assert_eq!(
            short.opcode,
            IcpOpcode::Miss,
            "not fresh long enough: no HIT at all"
        );
    }
}
