//! Choosing the next hop for a miss and fetching through it, in the seeds' order: a peer
//! whose cache digest says it holds the object (then no ICP round is made), a sibling
//! that answered ICP HIT, an ICP parent that answered HIT, the HTTP parents (the first
//! routing rule that matches gives them and their order; those known to be down are
//! skipped), the fastest ICP parent that answered, then the origin unless the rule or
//! `never_direct` forbids it.

pub mod carp;
pub mod fleet_home;
pub mod health;
pub mod parents;
pub mod peers;
pub mod reach;
pub mod rules;
pub mod selection;
pub mod upstream;

use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, HOST, TRANSFER_ENCODING,
};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::SizeHint;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::access_log::{HierCode, Hierarchy};
use crate::cache::key::cache_key;
use crate::digest;
use crate::http::body::{empty_body, BoxError, ProxyBody};
use crate::http::errors::ProxyError;
use crate::http::headers::{append_via, is_loop, remove_hop_by_hop};
use crate::http::interim::InterimRelay;
use crate::icp::codec::IcpOpcode;
use crate::icp::hit_obj;
use crate::icp::querier;
use crate::icp::socket::Answer;
use crate::runtime::Runtime;
use crate::stats::{PeerStats, Timeout};
use canopy_config::config::{IcpMode, RoundRobin};
use parents::Parent;
use peers::PeerEntry;
use rules::Route;
use selection::Candidate;
use upstream::{ClientBodyError, HopFailure, UpstreamBody, UpstreamError};

/// The client's address, kept in the request's extensions for routing by client, and where
/// the interim responses to its request go (none for an HTTP/1.0 client).
#[derive(Debug, Clone)]
pub struct ClientAddr(pub IpAddr, pub Option<InterimRelay>);

/// One place a miss can be fetched from.
pub enum Hop<'a> {
    Parent(&'a Parent),
    /// A peer that answered ICP HIT. If it cannot serve the object after all, that is a
    /// false hit: counted, and the next hop is tried.
    PeerHit(&'a PeerEntry),
    /// The object a peer's HIT_OBJ carried: served without an HTTP fetch if it passes the
    /// checks any upstream response gets, else the peer is asked over HTTP (the next hop).
    PeerObject(&'a PeerEntry, Bytes),
    /// An ICP parent asked to fetch a miss, and the hierarchy code for why it was.
    PeerParent(&'a PeerEntry, HierCode),
    /// A peer whose cache digest says it holds the object, asked with no ICP query; if it
    /// cannot serve it, that is a false hit of the digest's, and the next hop is tried.
    DigestHit(&'a PeerEntry),
    /// The URL's home node in the fleet's CARP array (`fleet_peering = carp`); what it
    /// serves is not kept here, so that each URL is kept by one node.
    FleetHome(&'a Parent),
    Origin,
}

/// Why a plan's hops are what they are; `X-Canopy-Hop` says it in these words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanReason {
    /// `always_direct` is on.
    AlwaysDirect,
    /// The request has been through this proxy already.
    Loop,
    /// No parent is up: peers, then the origin.
    Direct,
    /// The parents in the order listed, and the ones after them.
    InOrder,
    ClientAddress,
    Strict,
    ConsistentHash,
    Carp,
}

impl PlanReason {
    fn of(mode: RoundRobin) -> PlanReason {
        match mode {
            RoundRobin::False => PlanReason::InOrder,
            RoundRobin::True => PlanReason::ClientAddress,
            RoundRobin::Strict => PlanReason::Strict,
            RoundRobin::ConsistentHash => PlanReason::ConsistentHash,
            RoundRobin::Carp => PlanReason::Carp,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PlanReason::AlwaysDirect => "always_direct",
            PlanReason::Loop => "loop",
            PlanReason::Direct => "direct",
            PlanReason::InOrder => "in_order",
            PlanReason::ClientAddress => "client_address",
            PlanReason::Strict => "strict",
            PlanReason::ConsistentHash => "consistent_hash",
            PlanReason::Carp => "carp",
        }
    }
}

/// The hops for one request, in order, and why.
pub struct Plan<'a> {
    pub hops: Vec<Hop<'a>>,
    /// The rule that decided (0: the default rule).
    pub rule: usize,
    pub reason: PlanReason,
    /// Parents left out because they are down, with why.
    pub skipped: Vec<String>,
}

impl Hop<'_> {
    /// The hierarchy code and host, for the access log.
    fn hierarchy(&self, plan: &Plan<'_>, parts: &Parts) -> Hierarchy {
        match self {
            Hop::PeerHit(p) | Hop::PeerObject(p, _) => {
                let code = if p.is_sibling() {
                    HierCode::SiblingHit
                } else {
                    HierCode::ParentHit
                };
                Hierarchy::new(code, &p.config.host)
            }
            Hop::PeerParent(p, code) => Hierarchy::new(*code, &p.config.host),
            Hop::DigestHit(p) => {
                let code = if p.is_sibling() {
                    HierCode::CdSiblingHit
                } else {
                    HierCode::CdParentHit
                };
                Hierarchy::new(code, &p.config.host)
            }
            Hop::Parent(p) => {
                let code = match plan.reason {
                    PlanReason::InOrder => HierCode::FirstUpParent,
                    PlanReason::Carp => HierCode::Carp,
                    _ => HierCode::RoundRobinParent,
                };
                Hierarchy::new(code, &p.host)
            }
            Hop::FleetHome(p) => Hierarchy::new(HierCode::Carp, &p.host),
            Hop::Origin => Hierarchy::new(HierCode::Direct, parts.uri.host().unwrap_or_default()),
        }
    }

    /// Which hop served and why, for `X-Canopy-Hop`; `n` is its place in the plan.
    fn explanation(&self, plan: &Plan<'_>, n: usize) -> String {
        match self {
            Hop::PeerHit(p) => format!("peer={} icp=HIT", p.config.name),
            Hop::PeerObject(p, _) => format!("peer={} icp=HIT_OBJ", p.config.name),
            Hop::PeerParent(p, code) => format!("peer={} hierarchy={code}", p.config.name),
            Hop::DigestHit(p) => format!("peer={} digest=HIT", p.config.name),
            Hop::Parent(p) => format!(
                "parent={} rule={} reason={}",
                p.name,
                plan.rule,
                plan.reason.as_str()
            ),
            Hop::FleetHome(p) => format!("fleet_home={} reason=carp", p.name),
            Hop::Origin => {
                let why = if n == 0 {
                    plan.reason.as_str()
                } else {
                    "parents_failed"
                };
                format!("direct rule={} reason={why}", plan.rule)
            }
        }
    }
}

/// An upstream response and where it came from.
pub struct Fetched {
    pub response: Response<UpstreamBody>,
    /// How it was forwarded, for the access log.
    pub hierarchy: Hierarchy,
    /// Whether this proxy may keep a copy.
    pub may_store: bool,
    /// Which hop served and why, for `X-Canopy-Hop`.
    pub route: String,
}

/// The hops to try for a request. `answers` are the ICP replies to this request's round,
/// if one was made (`None`: no round, as for a request that may not go to siblings).
pub fn plan<'a>(
    runtime: &'a Runtime,
    method: &Method,
    parts: &Parts,
    answers: Option<&[Answer]>,
) -> Plan<'a> {
    let config = &runtime.config;
    let direct = |go_direct: bool| !config.never_direct.0 && go_direct;
    let route: &Route = runtime
        .routes
        .iter()
        .find(|r| r.matches(method, &parts.uri))
        .unwrap_or(&runtime.default_route);
    // A request that has been through us already must not go round again. It goes direct
    // only where the route allows that: as in Squid, never_direct holds on a loop too, so a
    // forged Via does not get a client round a rule's mandatory parent.
    let looped = is_loop(&parts.headers, &config.visible_name);
    if looped || config.always_direct.0 {
        let allowed = if config.always_direct.0 {
            !config.never_direct.0
        } else {
            direct(route.go_direct)
        };
        return Plan {
            hops: if allowed {
                vec![Hop::Origin]
            } else {
                Vec::new()
            },
            rule: if allowed { 0 } else { route.number },
            reason: if config.always_direct.0 {
                PlanReason::AlwaysDirect
            } else {
                PlanReason::Loop
            },
            skipped: Vec::new(),
        };
    }
    let candidates: Vec<Candidate<'_>> = route
        .parents
        .iter()
        .map(|&(i, weight)| Candidate {
            name: &runtime.parents[i].name,
            host: &runtime.parents[i].host,
            weight,
        })
        .collect();
    let client = parts
        .extensions
        .get::<ClientAddr>()
        .map(|c| c.0)
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    // Only the hashes read the URL; the other orders should not format it.
    let url = match route.round_robin {
        RoundRobin::ConsistentHash => parts.uri.to_string(),
        RoundRobin::Carp => carp::request_url(&parts.uri),
        _ => String::new(),
    };
    let order = selection::order(
        route.round_robin,
        &candidates,
        &url,
        client,
        &route.rotation,
    );
    let now = Instant::now();
    let order = if route.round_robin == RoundRobin::Carp {
        selection::carp_failover(order, |i| {
            let parent = &runtime.parents[route.parents[i].0];
            parent.stats.health.available(now, runtime.retry_time)
        })
    } else {
        order
    };
    let usable = |p: &&PeerEntry| p.stats.health.available(now, runtime.retry_time);
    let mut hops = Vec::new();
    let mut skipped = Vec::new();
    let answered = answers.unwrap_or_default();
    for sibling in [true, false] {
        for (peer, object) in answered
            .iter()
            .filter(|a| a.opcode == IcpOpcode::Hit)
            .filter_map(|a| Some((runtime.peers.get(a.peer)?, &a.object)))
            .filter(|(p, _)| p.is_sibling() == sibling && usable(p))
        {
            if let Some(object) = object {
                hops.push(Hop::PeerObject(peer, object.clone()));
            }
            hops.push(Hop::PeerHit(peer));
        }
    }
    // A GET or HEAD goes to its URL's home node first: unless that is this node, it is
    // down, or the request has been through the fleet already.
    let fleet_home = (runtime.fleet_home.as_ref())
        .filter(|_| *method == Method::GET || *method == Method::HEAD)
        .and_then(|fleet| fleet.home(parts))
        .filter(|home| home.stats.health.available(now, runtime.retry_time));
    hops.extend(fleet_home.map(Hop::FleetHome));
    let mut http_parents = 0;
    for i in order {
        let parent = &runtime.parents[route.parents[i].0];
        if parent.stats.health.available(now, runtime.retry_time) {
            hops.push(Hop::Parent(parent));
            http_parents += 1;
        } else {
            let health = parent.stats.health.snapshot();
            skipped.push(format!(
                "{}: down since {} ({})",
                parent.name,
                health.down_since.unwrap_or_default(),
                health.down_reason.unwrap_or_default()
            ));
        }
    }
    let reason = if http_parents == 0 {
        PlanReason::Direct
    } else {
        PlanReason::of(route.round_robin)
    };
    if config.icp_mode == IcpMode::SendReceive {
        hops.extend(
            icp_parents(&runtime.peers, answers, &runtime.peer_rotation)
                .into_iter()
                .filter(|p| usable(&p.0))
                .map(|(p, code)| Hop::PeerParent(p, code)),
        );
    }
    if direct(route.go_direct) {
        hops.push(Hop::Origin);
    }
    Plan {
        hops,
        rule: route.number,
        reason,
        skipped,
    }
}

/// The ICP parents that may fetch a miss, in Squid's order: those that answered MISS,
/// fastest first (reply time divided by weight, as Squid weighs them); then the
/// `round_robin` parents, the next in the rotation first; then those never asked (no-query,
/// or no round was made); then the `default` parents. A parent that was asked and did not
/// answer is passed over for this request unless it is in the rotation or a default; a
/// dead one always is.
fn icp_parents<'a>(
    peers: &'a [PeerEntry],
    answers: Option<&[Answer]>,
    rotation: &AtomicUsize,
) -> Vec<(&'a PeerEntry, HierCode)> {
    let alive_parent = |p: &&PeerEntry| !p.is_sibling() && !p.stats.is_dead();
    let mut hops: Vec<(&PeerEntry, HierCode)> = Vec::new();
    if let Some(answers) = answers {
        let mut missed: Vec<(Duration, &PeerEntry)> = answers
            .iter()
            .filter(|a| a.opcode == IcpOpcode::Miss)
            .filter_map(|a| Some((a.elapsed, peers.get(a.peer)?)))
            .filter(|(_, p)| !p.is_sibling())
            .map(|(elapsed, p)| (elapsed / p.config.weight.max(1), p))
            .collect();
        missed.sort_by_key(|(weighed, _)| *weighed);
        hops.extend(
            missed
                .into_iter()
                .map(|(_, p)| (p, HierCode::FirstParentMiss)),
        );
    }
    let listed = |hops: &[(&PeerEntry, HierCode)], p: &PeerEntry| {
        hops.iter().any(|(h, _)| std::ptr::eq(*h, p))
    };
    let in_rotation: Vec<&PeerEntry> = peers
        .iter()
        .filter(alive_parent)
        .filter(|p| p.config.round_robin && !listed(&hops, p))
        .collect();
    let candidates: Vec<Candidate<'_>> = in_rotation
        .iter()
        .map(|p| Candidate {
            name: &p.config.name,
            host: &p.config.host,
            weight: p.config.weight,
        })
        .collect();
    let localhost = IpAddr::from([127, 0, 0, 1]);
    for i in selection::order(RoundRobin::Strict, &candidates, "", localhost, rotation) {
        hops.push((in_rotation[i], HierCode::RoundRobinParent));
    }
    let asked = |p: &PeerEntry| answers.is_some() && p.takes_queries();
    for p in peers.iter().filter(alive_parent) {
        if !asked(p) && !p.config.default_parent && !listed(&hops, p) {
            hops.push((p, HierCode::FirstUpParent));
        }
    }
    for p in peers.iter().filter(alive_parent) {
        if p.config.default_parent && !listed(&hops, p) {
            hops.push((p, HierCode::DefaultParent));
        }
    }
    hops
}

/// Why a peer that answered ICP HIT did not serve the object after all.
#[derive(Debug, thiserror::Error)]
enum FalseHit {
    /// A 504 to `only-if-cached`, or a sibling's server error.
    #[error("answered {}", .0.as_u16())]
    Answered(StatusCode),
    #[error("connect: {0}")]
    Connect(String),
    #[error("{0}")]
    Failed(String),
    #[error("no response in time")]
    NoResponse,
}

/// Whether `peer`'s attempt was a false hit, and why; `None` when it served the object.
fn false_hit(
    peer: &PeerEntry,
    attempt: &Result<Result<Response<Incoming>, UpstreamError>, tokio::time::error::Elapsed>,
) -> Option<FalseHit> {
    match attempt {
        Ok(Ok(response)) => {
            let status = response.status();
            (status == StatusCode::GATEWAY_TIMEOUT
                || (peer.is_sibling() && status.is_server_error()))
            .then_some(FalseHit::Answered(status))
        }
        // Nothing was asked of the peer: its connections were all busy.
        Ok(Err(UpstreamError::AtLimit { .. })) => None,
        Ok(Err(e)) if e.is_connect() => Some(FalseHit::Connect(e.innermost())),
        Ok(Err(e)) => Some(FalseHit::Failed(e.innermost())),
        Err(_) => Some(FalseHit::NoResponse),
    }
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// Sends the request through the first hop that takes it. A parent that cannot be reached
/// is passed over (and counted); an idempotent request without a body also moves on when a
/// parent fails before answering, or answers with one of `retry_statuses`.
pub async fn fetch(
    runtime: &Runtime,
    parts: &Parts,
    headers: HeaderMap,
    body: Option<Incoming>,
) -> Result<Fetched, (ProxyError, Hierarchy)> {
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let mut headers = headers;
    remove_hop_by_hop(&mut headers);
    append_via(&mut headers, &runtime.via);
    if let Ok(value) = HeaderValue::from_str(&authority) {
        headers.insert(HOST, value);
    }
    let mut body = body.filter(|b| !http_body::Body::is_end_stream(b));
    let had_body = body.is_some();
    let size = body.as_ref().map(http_body::Body::size_hint);
    frame(&mut headers, &parts.method, size.as_ref());
    let may_retry = !had_body && idempotent(&parts.method);
    let hierarchical = body.is_none()
        && !runtime.peers.is_empty()
        && !is_loop(&parts.headers, &runtime.config.visible_name);
    // A peer's digest is consulted before any ICP round; a hit needs no round at all.
    let url = (hierarchical && digest::peers::eligible(&parts.method, &parts.headers))
        .then(|| cache_key(&parts.uri));
    let predicted = url
        .as_deref()
        .filter(|_| !runtime.config.always_direct.0)
        .and_then(|url| digest::peers::select(runtime, url));
    let answers = match &url {
        Some(url)
            if predicted.is_none() && querier::eligible(runtime, &parts.method, &parts.headers) =>
        {
            Some(querier::ask(runtime, url, &headers).await)
        }
        _ => None,
    };
    let mut plan = plan(runtime, &parts.method, parts, answers.as_deref());
    if let Some(peer) = predicted {
        plan.hops.insert(0, Hop::DigestHit(peer));
    }
    let mut tried: Vec<String> = plan.skipped.clone();
    let mut answered_badly = false;
    let mut attempted = false;
    // The peer whose HIT_OBJ was refused, its false hit already counted.
    let mut refused_inline: Option<&PeerEntry> = None;
    let hop_count = plan.hops.len();
    for (n, hop) in plan.hops.iter().enumerate() {
        let is_last = n + 1 == hop_count;
        let (client, counters, name): (_, Option<&PeerStats>, _) = match hop {
            Hop::PeerHit(p) | Hop::PeerObject(p, _) | Hop::PeerParent(p, _) | Hop::DigestHit(p) => {
                (&p.client, Some(&*p.stats), p.config.name.as_str())
            }
            Hop::Parent(p) | Hop::FleetHome(p) => (&p.client, Some(&*p.stats), p.name.as_str()),
            Hop::Origin => (&runtime.origin, None, authority.as_str()),
        };
        // The log's hierarchy code and X-Canopy-Hop are written only when they will be read.
        let hierarchy = if runtime.access_log.is_some() {
            hop.hierarchy(&plan, parts)
        } else {
            Hierarchy::NONE
        };
        let route = if runtime.config.debug_headers.0 {
            hop.explanation(&plan, n)
        } else {
            String::new()
        };
        if let Hop::PeerObject(peer, object) = hop {
            let max = runtime.config.icp_hit_obj_max_bytes;
            match hit_obj::read(object, max, &parts.headers, &runtime.targets) {
                Ok(inline) => {
                    peer.stats.hits_served.fetch_add(1, Relaxed);
                    let body = UpstreamBody::inline(
                        inline.body,
                        runtime.read_timeout,
                        runtime.stats.clone(),
                    );
                    let mut response = Response::new(body);
                    *response.status_mut() = inline.status;
                    *response.headers_mut() = inline.headers;
                    return Ok(Fetched {
                        response,
                        hierarchy,
                        may_store: !peer.config.proxy_only,
                        route,
                    });
                }
                Err(refused) => {
                    // The peer said HIT and sent what cannot be served: a false hit, counted
                    // once for its answer even if the HTTP request that follows fails too.
                    peer.stats.false_hits_icp.fetch_add(1, Relaxed);
                    refused_inline = Some(peer);
                    tracing::info!(
                        "false hit: {name}'s HIT_OBJ for {} not used: {refused}",
                        parts.uri
                    );
                    tried.push(format!("{name}: false hit, HIT_OBJ not used, {refused}"));
                    continue;
                }
            }
        }
        if !client.may_take_request() {
            tried.push(format!("{name}: its max_conn connections are all busy"));
            continue;
        }
        if attempted {
            // A body goes once: after a failed attempt it is gone.
            if had_body {
                break;
            }
            runtime.stats.retries.add(1);
        }
        attempted = true;
        // The last hop can have the fields themselves; earlier ones need a copy to retry with.
        let fields = if is_last {
            std::mem::take(&mut headers)
        } else {
            headers.clone()
        };
        let request = upstream_request(hop, parts, fields, body.take());
        let attempt = tokio::time::timeout(runtime.read_timeout, client.request(request)).await;
        match &attempt {
            Err(_) => runtime.stats.timeouts.fired(Timeout::UpstreamRead),
            Ok(Err(e)) if e.is_connect_timeout() => {
                runtime.stats.timeouts.fired(Timeout::UpstreamConnect);
            }
            _ => {}
        }
        if let Hop::PeerHit(peer) | Hop::DigestHit(peer) = hop {
            if let Some(reason) = false_hit(peer, &attempt) {
                // Counted by the method that predicted the hit, so an admin can compare them.
                let counter = match hop {
                    Hop::DigestHit(_) => &peer.stats.false_hits_digest,
                    _ if peer.asked_over_htcp() => &peer.stats.false_hits_htcp,
                    _ => &peer.stats.false_hits_icp,
                };
                if !refused_inline.is_some_and(|refused| std::ptr::eq(refused, *peer)) {
                    counter.fetch_add(1, Relaxed);
                }
                if let FalseHit::Connect(_) = reason {
                    record_failure(runtime, &peer.stats, name, &reason.to_string());
                }
                tracing::info!(
                    "false hit: {} said HIT ({}) for {} but {reason}",
                    peer.config.name,
                    if matches!(hop, Hop::DigestHit(_)) {
                        "digest"
                    } else {
                        "ICP"
                    },
                    parts.uri
                );
                tried.push(format!("{name}: false hit, {reason}"));
                continue;
            }
            if matches!(attempt, Ok(Ok(_))) {
                peer.stats.hits_served.fetch_add(1, Relaxed);
            }
        }
        let may_store = match hop {
            Hop::PeerHit(p) | Hop::PeerObject(p, _) | Hop::PeerParent(p, _) | Hop::DigestHit(p) => {
                !p.config.proxy_only
            }
            Hop::Parent(_) | Hop::Origin => true,
            Hop::FleetHome(_) => false,
        };
        let failure = match attempt {
            Ok(Err(e @ UpstreamError::ClientBody(_))) => {
                let error = ProxyError::bad_request(format!(
                    "The request body could not be read ({}): it was not passed on whole.",
                    e.innermost()
                ));
                return Err((error, hierarchy));
            }
            Ok(Ok(response)) => {
                let status = response.status();
                if let Some(counters) = counters {
                    counters.fetches.fetch_add(1, Relaxed);
                    if let Some(len) = response.headers().get(http::header::CONTENT_LENGTH) {
                        let len: u64 = len.to_str().ok().and_then(|l| l.parse().ok()).unwrap_or(0);
                        counters.bytes.fetch_add(len, Relaxed);
                    }
                    if counters.health.record_success() {
                        tracing::info!("{name} is up again");
                    }
                    if may_retry
                        && !is_last
                        && runtime.config.retry_statuses.0.contains(&status.as_u16())
                    {
                        tried.push(format!("{name}: answered {status}"));
                        answered_badly = true;
                        continue;
                    }
                }
                let (read_timeout, stats) = (runtime.read_timeout, runtime.stats.clone());
                return Ok(Fetched {
                    response: response.map(|body| UpstreamBody::new(body, read_timeout, stats)),
                    hierarchy,
                    may_store,
                    route,
                });
            }
            Ok(Err(UpstreamError::Denied(denied))) => {
                runtime.stats.denied_destinations.add(1);
                return Err((denied.into(), hierarchy));
            }
            Ok(Err(e @ UpstreamError::AtLimit { .. })) => {
                // Lost the last free connection to another request: not the peer's fault.
                tried.push(format!("{name}: {e}"));
                continue;
            }
            Ok(Err(e)) => {
                let connect_timeout_ms = match hop {
                    Hop::PeerHit(p)
                    | Hop::PeerObject(p, _)
                    | Hop::PeerParent(p, _)
                    | Hop::DigestHit(p) => p.config.connect_timeout_ms,
                    Hop::Parent(_) | Hop::FleetHome(_) | Hop::Origin => None,
                };
                HopFailure::of(
                    &e,
                    connect_timeout_ms.unwrap_or(runtime.config.connect_timeout_ms),
                )
            }
            Err(_) => HopFailure::NoResponse {
                ms: runtime.read_timeout.as_millis(),
            },
        };
        tracing::info!("{name} failed: {failure}");
        tried.push(format!("{name}: {failure}"));
        if let Some(counters) = counters {
            record_failure(runtime, counters, name, &failure.to_string());
        }
        let origin = matches!(hop, Hop::Origin);
        if !(failure.is_connect() || may_retry) || origin {
            return Err((failure.to_proxy_error(name, origin), hierarchy));
        }
    }
    let reason = if had_body && !tried.is_empty() {
        NoHopServed::BodySentOnce { tried }
    } else if matches!(plan.reason, PlanReason::Loop) && runtime.config.never_direct.0 {
        NoHopServed::LoopNeverDirect
    } else if matches!(plan.reason, PlanReason::Loop) {
        NoHopServed::LoopNotDirect { rule: plan.rule }
    } else if tried.is_empty() {
        NoHopServed::NoParent
    } else if runtime.config.never_direct.0 {
        NoHopServed::NeverDirect { tried }
    } else {
        NoHopServed::NotDirect {
            rule: plan.rule,
            tried,
        }
    };
    let status = if answered_badly {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::GATEWAY_TIMEOUT
    };
    Err((ProxyError::new(status, reason.to_string()), Hierarchy::NONE))
}

/// Why no hop served a request, with what each one tried said.
#[derive(Debug, thiserror::Error)]
enum NoHopServed {
    #[error("the request body was sent once and cannot be sent again: {}", .tried.join("; "))]
    BodySentOnce { tried: Vec<String> },
    #[error("never_direct is on and no parent is configured")]
    NoParent,
    #[error("never_direct is on and no parent could serve: {}", .tried.join("; "))]
    NeverDirect { tried: Vec<String> },
    #[error("no hop could serve (going direct is not allowed by rule {rule}): {}", .tried.join("; "))]
    NotDirect { rule: usize, tried: Vec<String> },
    #[error("forwarding loop: the request's Via names this proxy, and never_direct is on")]
    LoopNeverDirect,
    #[error("forwarding loop: the request's Via names this proxy, and rule {rule} does not allow going direct")]
    LoopNotDirect { rule: usize },
}

/// The request sent to `hop`, with `fields` and the client's body if it has one.
fn upstream_request(
    hop: &Hop<'_>,
    parts: &Parts,
    fields: HeaderMap,
    body: Option<Incoming>,
) -> Request<ProxyBody> {
    let mut request = Request::new(
        body.map(|b| {
            b.map_err(|e| BoxError::from(ClientBodyError(e)))
                .boxed_unsync()
        })
        .unwrap_or_else(empty_body),
    );
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = fields;
    if let Some(relay) = parts
        .extensions
        .get::<ClientAddr>()
        .and_then(|c| c.1.as_ref())
    {
        relay.attach(&mut request);
    }
    if let Hop::PeerHit(peer) | Hop::DigestHit(peer) = hop {
        if peer.is_sibling() && !peer.config.allow_miss {
            // A sibling serves us hits only; it must not fetch a miss for us.
            request
                .headers_mut()
                .append(CACHE_CONTROL, HeaderValue::from_static("only-if-cached"));
        }
    }
    request
}

/// Makes the framing fields agree with the body that is sent (`None`: no body), so a
/// client's Content-Length never goes on without the bytes it announces. hyper writes the
/// Content-Length of a body of known size; a body of unknown size is sent chunked, said
/// outright because hyper would otherwise drop it from a GET or HEAD. A body-less request
/// other than GET or HEAD that announced an empty body keeps `Content-Length: 0`, which
/// some servers want on a POST.
fn frame(headers: &mut HeaderMap, method: &Method, body: Option<&SizeHint>) {
    let announced = headers.remove(CONTENT_LENGTH).is_some();
    match body {
        Some(size) if size.exact().is_none() => {
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
        Some(_) => {}
        None if announced && method != Method::GET && method != Method::HEAD => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        None => {}
    }
}

/// Counts a failed fetch through a parent or peer, and marks it down past the threshold.
fn record_failure(runtime: &Runtime, counters: &PeerStats, name: &str, failure: &str) {
    counters.record_failure(failure);
    if counters.health.record_failure(
        Instant::now(),
        runtime.config.fail_threshold,
        runtime.retry_time,
        failure,
    ) {
        tracing::warn!("{name} marked down: {failure}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use canopy_config::config::{Config, Flag, Peer, PeerKind};

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
            ..Peer::default()
        }
    }

    /// The hops `plan` gives a GET for http://example.com/ with `answers`.
    fn hops(runtime: &Runtime, headers: HeaderMap, answers: Option<&[Answer]>) -> Vec<String> {
        let mut request = Request::new(());
        *request.uri_mut() = "http://example.com/".parse().unwrap();
        *request.headers_mut() = headers;
        let (parts, ()) = request.into_parts();
        names(&plan(runtime, &Method::GET, &parts, answers).hops)
    }

    fn names(hops: &[Hop<'_>]) -> Vec<String> {
        hops.iter()
            .map(|hop| match hop {
                Hop::PeerHit(p) => format!("hit:{}", p.config.name),
                Hop::PeerObject(p, _) => format!("hit_obj:{}", p.config.name),
                Hop::PeerParent(p, code) => format!("{code}:{}", p.config.name),
                Hop::DigestHit(p) => format!("digest:{}", p.config.name),
                Hop::Parent(p) => format!("http:{}", p.name),
                Hop::FleetHome(p) => format!("home:{}", p.name),
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
            object: None,
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
        assert_eq!(
            hops(&runtime, HeaderMap::new(), Some(&answers)),
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
        assert_eq!(
            hops(&runtime, HeaderMap::new(), None),
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
        heavy.host = "10.0.0.50".into();
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
            hops(&runtime, HeaderMap::new(), Some(&answers)),
            [
                "FIRST_PARENT_MISS:heavy",
                "FIRST_PARENT_MISS:light",
                "origin"
            ]
        );
    }

    #[test]
    fn the_rotation_takes_what_no_reply_placed_and_the_default_parent_comes_last() {
        let mut rr_a = peer("rr-a", PeerKind::Parent, true);
        rr_a.round_robin = true;
        let mut rr_bb = peer("rr-bb", PeerKind::Parent, true);
        rr_bb.round_robin = true;
        rr_bb.weight = 2;
        let mut fallback = peer("fallback", PeerKind::Parent, false);
        fallback.default_parent = true;
        let config = Config {
            icp_mode: IcpMode::SendReceive,
            peers: vec![
                rr_a,
                rr_bb,
                fallback,
                peer("silent-parent", PeerKind::Parent, false),
            ],
            ..Config::default()
        };
        let runtime = Runtime::for_tests(config);
        // Both ICP parents were asked and neither answered.
        let firsts: Vec<Vec<String>> = (0..3)
            .map(|_| hops(&runtime, HeaderMap::new(), Some(&[])))
            .collect();
        assert_eq!(
            firsts[0],
            [
                "ROUNDROBIN_PARENT:rr-a",
                "ROUNDROBIN_PARENT:rr-bb",
                "DEFAULT_PARENT:fallback",
                "origin"
            ]
        );
        let by_weight: Vec<&str> = firsts.iter().map(|h| h[0].as_str()).collect();
        assert_eq!(
            by_weight,
            [
                "ROUNDROBIN_PARENT:rr-a",
                "ROUNDROBIN_PARENT:rr-bb",
                "ROUNDROBIN_PARENT:rr-bb"
            ]
        );
        // A default parent that answered MISS is used as such, and listed once.
        let missed = [answer(2, IcpOpcode::Miss, 1)];
        let with_miss = hops(&runtime, HeaderMap::new(), Some(&missed));
        assert_eq!(with_miss[0], "FIRST_PARENT_MISS:fallback");
        assert_eq!(
            with_miss
                .iter()
                .filter(|h| h.ends_with(":fallback"))
                .count(),
            1,
            "{with_miss:?}"
        );
    }

    #[test]
    fn framing_fields_follow_the_body_sent() {
        let announced = |len: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_LENGTH, HeaderValue::from_static(len));
            h
        };
        // hyper writes the length of a body of known size.
        let mut h = announced("5");
        frame(&mut h, &Method::GET, Some(&SizeHint::with_exact(5)));
        assert!(h.is_empty());
        let mut h = HeaderMap::new();
        frame(&mut h, &Method::GET, Some(&SizeHint::new()));
        assert_eq!(h[TRANSFER_ENCODING], "chunked");
        let mut h = announced("0");
        frame(&mut h, &Method::GET, None);
        assert!(h.is_empty());
        let mut h = announced("0");
        frame(&mut h, &Method::POST, None);
        assert_eq!(h[CONTENT_LENGTH], "0");
        let mut h = HeaderMap::new();
        frame(&mut h, &Method::POST, None);
        assert!(h.is_empty());
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
        assert!(hops(&runtime, looped, None).is_empty());
        assert_eq!(
            hops(&runtime, HeaderMap::new(), None),
            ["FIRSTUP_PARENT:par"]
        );
    }
}
