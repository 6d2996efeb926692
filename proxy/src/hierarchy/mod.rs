//! Choosing the next hop for a miss and fetching through it, in the seeds' order: a sibling
//! that answered ICP HIT, an ICP parent that answered HIT, the HTTP parents in order (or
//! rotated), the fastest ICP parent that answered, then the origin server unless
//! `never_direct` forbids it.

pub mod peers;
pub mod upstream;

use std::error::Error as _;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, CACHE_CONTROL, HOST};
use http::request::Parts;
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::config::{IcpMode, RoundRobin};
use crate::hierarchy::peers::PeerEntry;
use crate::http::errors::ProxyError;
use crate::http::forward::cache_key;
use crate::http::headers::{append_via, is_loop, remove_hop_by_hop};
use crate::http::{empty_body, BoxError};
use crate::icp::codec::IcpOpcode;
use crate::icp::querier::{self, Answer};
use crate::server::{Parent, Runtime};

/// One place a miss can be fetched from.
#[derive(Clone, Copy)]
pub enum Hop<'a> {
    Parent(&'a Parent),
    /// A peer that answered ICP HIT. If it cannot serve the object after all, that is a
    /// false hit: counted, and the next hop is tried.
    PeerHit(&'a PeerEntry),
    /// An ICP parent asked to fetch a miss; `code` is Squid's hierarchy code for it.
    PeerParent(&'a PeerEntry, &'static str),
    Origin,
}

/// An upstream response and where it came from.
pub struct Fetched {
    pub response: Response<Incoming>,
    /// Squid's hierarchy code and host, for the access log.
    pub hierarchy: String,
    /// Whether this proxy may keep a copy.
    pub may_store: bool,
}

/// The hops to try, in order. `answers` are the ICP replies to this request's round, if
/// one was made (`None`: no round, as for a request that may not go to siblings).
pub fn hops<'a>(
    runtime: &'a Runtime,
    headers: &HeaderMap,
    answers: Option<&[Answer]>,
) -> Vec<Hop<'a>> {
    let mut hops = Vec::new();
    // A request that has been through us already must not go round again.
    if !is_loop(headers, &runtime.config.visible_name) {
        let peers = &runtime.peers;
        let answered = answers.unwrap_or_default();
        let hits = |sibling: bool| {
            answered
                .iter()
                .filter(move |a| a.opcode == IcpOpcode::Hit)
                .filter_map(|a| peers.get(a.peer))
                .filter(move |p| p.is_sibling() == sibling)
        };
        hops.extend(hits(true).map(Hop::PeerHit));
        hops.extend(hits(false).map(Hop::PeerHit));
        if !runtime.parents.is_empty() {
            let start = match runtime.config.round_robin {
                RoundRobin::False => 0,
                RoundRobin::Strict => {
                    runtime.next_parent.fetch_add(1, Relaxed) % runtime.parents.len()
                }
            };
            let parents = &runtime.parents;
            hops.extend(
                (0..parents.len()).map(|i| Hop::Parent(&parents[(start + i) % parents.len()])),
            );
        }
        if runtime.config.icp_mode == IcpMode::SendReceive {
            hops.extend(icp_parents(peers, answers));
        }
    }
    if !runtime.config.never_direct.0 {
        hops.push(Hop::Origin);
    }
    hops
}

/// The ICP parents that may fetch a miss: those that answered MISS, fastest first (reply
/// time divided by weight, as Squid weighs them); then
/// those never asked (no-query, or no round was made) that are not dead. A parent that
/// was asked and did not answer is passed over for this request.
fn icp_parents<'a>(peers: &'a [PeerEntry], answers: Option<&[Answer]>) -> Vec<Hop<'a>> {
    let is_parent = |p: &&PeerEntry| !p.is_sibling();
    let mut hops: Vec<Hop<'a>> = Vec::new();
    if let Some(answers) = answers {
        let mut missed: Vec<(Duration, &PeerEntry)> = answers
            .iter()
            .filter(|a| a.opcode == IcpOpcode::Miss)
            .filter_map(|a| Some((a.elapsed, peers.get(a.peer)?)))
            .filter(|(_, p)| is_parent(p))
            .map(|(elapsed, p)| (elapsed / p.config.weight.max(1), p))
            .collect();
        missed.sort_by_key(|(weighed, _)| *weighed);
        hops.extend(
            missed
                .into_iter()
                .map(|(_, p)| Hop::PeerParent(p, "FIRST_PARENT_MISS")),
        );
    }
    let asked = |p: &PeerEntry| answers.is_some() && p.takes_queries();
    hops.extend(
        peers
            .iter()
            .filter(is_parent)
            .filter(|p| !asked(p) && !p.stats.is_dead())
            .map(|p| Hop::PeerParent(p, "FIRSTUP_PARENT")),
    );
    hops
}

/// Whether a response from a peer after its HIT shows it did not hold the object after all.
fn is_false_hit(peer: &PeerEntry, status: http::StatusCode) -> bool {
    status == http::StatusCode::GATEWAY_TIMEOUT || (peer.is_sibling() && status.is_server_error())
}

/// Sends the request through the first hop that takes it. A hop that cannot be connected
/// to is passed over (and counted); any other failure ends the request.
pub async fn fetch(
    runtime: &Runtime,
    parts: &Parts,
    headers: HeaderMap,
    body: Option<Incoming>,
) -> Result<Fetched, (ProxyError, String)> {
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let mut headers = headers;
    remove_hop_by_hop(&mut headers);
    append_via(&mut headers, &runtime.via);
    if let Some(authority) = parts.uri.authority() {
        if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
            headers.insert(HOST, value);
        }
    }
    let mut body = body.filter(|b| !http_body::Body::is_end_stream(b));
    let had_body = body.is_some();
    let mut tried: Vec<String> = Vec::new();
    let strict = runtime.config.round_robin == RoundRobin::Strict;
    let answers = if body.is_none()
        && !is_loop(&parts.headers, &runtime.config.visible_name)
        && querier::eligible(runtime, &parts.method, &parts.headers)
    {
        Some(querier::ask(runtime, &cache_key(&parts.uri)).await)
    } else {
        None
    };
    for hop in hops(runtime, &parts.headers, answers.as_deref()) {
        if had_body && body.is_none() {
            break;
        }
        let (client, hierarchy, stats, name) = match hop {
            Hop::PeerHit(p) => (
                &p.client,
                format!(
                    "{}/{}",
                    if p.is_sibling() {
                        "SIBLING_HIT"
                    } else {
                        "PARENT_HIT"
                    },
                    p.config.host
                ),
                Some(&p.stats),
                p.config.name.as_str(),
            ),
            Hop::PeerParent(p, code) => (
                &p.client,
                format!("{code}/{}", p.config.host),
                Some(&p.stats),
                p.config.name.as_str(),
            ),
            Hop::Parent(p) => (
                &p.client,
                format!(
                    "{}/{}",
                    if strict {
                        "ROUNDROBIN_PARENT"
                    } else {
                        "FIRSTUP_PARENT"
                    },
                    p.host
                ),
                Some(&p.stats),
                p.name.as_str(),
            ),
            Hop::Origin => (
                &runtime.origin,
                format!("HIER_DIRECT/{}", parts.uri.host().unwrap_or("-")),
                None,
                host.as_str(),
            ),
        };
        let mut request = Request::new(
            body.take()
                .map(|b| b.map_err(BoxError::from).boxed_unsync())
                .unwrap_or_else(empty_body),
        );
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers.clone();
        if let Hop::PeerHit(peer) = hop {
            if peer.is_sibling() {
                // A sibling serves us hits only; it must not fetch a miss for us.
                request
                    .headers_mut()
                    .append(CACHE_CONTROL, HeaderValue::from_static("only-if-cached"));
            }
        }
        let attempt = tokio::time::timeout(runtime.read_timeout, client.request(request)).await;
        if let Hop::PeerHit(peer) = hop {
            let served = match &attempt {
                Ok(Ok(response)) => !is_false_hit(peer, response.status()),
                _ => false,
            };
            if !served {
                peer.stats.false_hits.fetch_add(1, Relaxed);
                let reason = match &attempt {
                    Ok(Ok(response)) => format!("answered {}", response.status().as_u16()),
                    Ok(Err(e)) => innermost(e),
                    Err(_) => "no response in time".to_owned(),
                };
                if let Ok(Err(e)) = &attempt {
                    if e.is_connect() {
                        peer.stats.record_failure(format!("connect: {reason}"));
                    }
                }
                tracing::info!(
                    "false hit: {} said HIT for {} but {reason}",
                    peer.config.name,
                    parts.uri
                );
                tried.push(format!("{name}: false hit, {reason}"));
                continue;
            }
            peer.stats.hits_served.fetch_add(1, Relaxed);
        }
        let may_store = match hop {
            Hop::PeerHit(p) | Hop::PeerParent(p, _) => !p.config.proxy_only,
            Hop::Parent(_) | Hop::Origin => true,
        };
        match attempt {
            Ok(Ok(response)) => {
                if let Some(stats) = stats {
                    stats.down.store(false, Relaxed);
                    stats.fetches.fetch_add(1, Relaxed);
                    if let Some(len) = response.headers().get(http::header::CONTENT_LENGTH) {
                        let len: u64 = len.to_str().ok().and_then(|l| l.parse().ok()).unwrap_or(0);
                        stats.bytes.fetch_add(len, Relaxed);
                    }
                }
                return Ok(Fetched {
                    response,
                    hierarchy,
                    may_store,
                });
            }
            Ok(Err(e)) if e.is_connect() => {
                let reason = innermost(&e);
                tracing::info!("cannot connect to {name}: {reason}");
                if let Some(stats) = stats {
                    stats.record_failure(format!("connect: {reason}"));
                }
                tried.push(format!("{name}: {reason}"));
                if matches!(hop, Hop::Origin) {
                    let error = if reason.contains("timed out") || reason.contains("timeout") {
                        ProxyError::gateway_timeout(format!("connecting to {host} timed out"))
                    } else {
                        ProxyError::bad_gateway(format!("cannot connect to {host}: {reason}"))
                    };
                    return Err((error, hierarchy));
                }
            }
            Ok(Err(e)) => {
                let reason = innermost(&e);
                if let Some(stats) = stats {
                    stats.record_failure(reason.clone());
                }
                return Err((
                    ProxyError::bad_gateway(format!("{name} failed: {reason}")),
                    hierarchy,
                ));
            }
            Err(_) => {
                if let Some(stats) = stats {
                    stats.record_failure("no response in time");
                }
                return Err((
                    ProxyError::gateway_timeout(format!(
                        "{name} did not answer within {} ms",
                        runtime.read_timeout.as_millis()
                    )),
                    hierarchy,
                ));
            }
        }
    }
    let reason = if had_body && !tried.is_empty() {
        format!(
            "the request body was sent to {} and cannot be sent again: {}",
            tried.last().map(String::as_str).unwrap_or(""),
            tried.join("; ")
        )
    } else if tried.is_empty() {
        "never_direct is on and no parent is configured".to_owned()
    } else {
        format!(
            "never_direct is on and no parent could be reached: {}",
            tried.join("; ")
        )
    };
    Err((
        ProxyError::gateway_timeout(reason),
        "HIER_NONE/-".to_owned(),
    ))
}

/// The most specific message in an error's chain ("Connection refused", not "client error").
fn innermost(error: &hyper_util::client::legacy::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        message = s.to_string();
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use crate::config::{Config, Flag, Peer, PeerKind};

    fn peer(name: &str, kind: PeerKind, no_query: bool) -> Peer {
        Peer {
            name: name.to_owned(),
            host: format!("10.0.0.{}", name.len()),
            kind,
            http_port: 3128,
            icp_port: 3130,
            proxy_only: false,
            no_query,
            multicast_responder: false,
            allow_miss: false,
            weight: 1,
        }
    }

    fn names(hops: &[Hop<'_>]) -> Vec<String> {
        hops.iter()
            .map(|hop| match hop {
                Hop::PeerHit(p) => format!("hit:{}", p.config.name),
                Hop::PeerParent(p, code) => format!("{code}:{}", p.config.name),
                Hop::Parent(p) => format!("http:{}", p.name),
                Hop::Origin => "origin".to_owned(),
            })
            .collect()
    }

    fn answer(peer: usize, opcode: IcpOpcode, ms: u64) -> Answer {
        Answer {
            peer,
            from: SocketAddr::from(([10, 0, 0, 1], 3130)),
            opcode,
            elapsed: Duration::from_millis(ms),
        }
    }

    #[test]
    fn hops_follow_the_seeds_order() {
        let config = Config {
            icp_mode: IcpMode::SendReceive,
            parents: "http-parent:3128;".parse().unwrap(),
            peers: vec![
                peer("sib", PeerKind::Sibling, false),
                peer("icp-par", PeerKind::Parent, false),
                peer("late-parent", PeerKind::Parent, false),
                peer("quiet-parent", PeerKind::Parent, true),
                peer("silent-parent", PeerKind::Parent, false),
            ],
            ..Config::default()
        };
        let runtime = Runtime::for_tests(config);
        let answers = [
            answer(2, IcpOpcode::Miss, 1),
            answer(1, IcpOpcode::Hit, 2),
            answer(0, IcpOpcode::Hit, 3),
        ];
        let hops = hops(&runtime, &HeaderMap::new(), Some(&answers));
        assert_eq!(
            names(&hops),
            [
                "hit:sib",
                "hit:icp-par",
                "http:http-parent:3128",
                "FIRST_PARENT_MISS:late-parent",
                "FIRSTUP_PARENT:quiet-parent",
                "origin"
            ]
        );
        // Without a round (a POST, say) no sibling; every parent that is not dead, in order.
        let no_round = super::hops(&runtime, &HeaderMap::new(), None);
        assert_eq!(
            names(&no_round),
            [
                "http:http-parent:3128",
                "FIRSTUP_PARENT:icp-par",
                "FIRSTUP_PARENT:late-parent",
                "FIRSTUP_PARENT:quiet-parent",
                "FIRSTUP_PARENT:silent-parent",
                "origin"
            ]
        );
    }

    #[test]
    fn weight_favours_a_parent_among_those_that_missed() {
        let mut heavy = peer("heavy", PeerKind::Parent, false);
        heavy.weight = 4;
        let config = Config {
            icp_mode: IcpMode::SendReceive,
            peers: vec![peer("light", PeerKind::Parent, false), heavy],
            ..Config::default()
        };
        let runtime = Runtime::for_tests(config);
        let answers = [
            answer(0, IcpOpcode::Miss, 10),
            answer(1, IcpOpcode::Miss, 20),
        ];
        assert_eq!(
            names(&hops(&runtime, &HeaderMap::new(), Some(&answers))),
            [
                "FIRST_PARENT_MISS:heavy",
                "FIRST_PARENT_MISS:light",
                "origin"
            ]
        );
    }

    #[test]
    fn a_loop_goes_direct_and_never_direct_has_no_origin() {
        let config = Config {
            icp_mode: IcpMode::SendReceive,
            visible_name: "edge".to_owned(),
            never_direct: Flag(true),
            peers: vec![peer("par", PeerKind::Parent, true)],
            ..Config::default()
        };
        let runtime = Runtime::for_tests(config);
        let mut looped = HeaderMap::new();
        looped.insert(http::header::VIA, HeaderValue::from_static("1.1 edge"));
        assert!(names(&hops(&runtime, &looped, None)).is_empty());
        assert_eq!(
            names(&hops(&runtime, &HeaderMap::new(), None)),
            ["FIRSTUP_PARENT:par"]
        );
    }
}
