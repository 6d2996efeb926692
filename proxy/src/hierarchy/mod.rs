//! Choosing the next hop for a miss and fetching through it: the first routing rule that
//! matches gives the parents and how to order them; parents known to be down are skipped;
//! the origin comes last unless the rule or `never_direct` forbids it.

pub mod health;
pub mod parent_config;
pub mod rules;
pub mod selection;
pub mod upstream;

use std::error::Error as _;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use http::header::{HeaderMap, HeaderValue, HOST};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::config::RoundRobin;
use crate::http::errors::ProxyError;
use crate::http::headers::{append_via, is_loop, remove_hop_by_hop};
use crate::http::{empty_body, BoxError};
use crate::server::{Parent, Runtime};
use rules::Route;
use selection::Candidate;

/// The client's address, kept in the request's extensions for routing by client.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// One place a miss can be fetched from.
pub enum Hop<'a> {
    Parent(&'a Parent),
    Origin,
}

/// The hops for one request, in order, and why.
pub struct Plan<'a> {
    pub hops: Vec<Hop<'a>>,
    /// The rule that decided (0: the default rule).
    pub rule: usize,
    pub reason: &'static str,
    /// Parents left out because they are down, with why.
    pub skipped: Vec<String>,
}

/// An upstream response and where it came from.
pub struct Fetched {
    pub response: Response<Incoming>,
    /// Squid's hierarchy code and host, for the access log.
    pub hierarchy: String,
    /// Whether this proxy may keep a copy.
    pub may_store: bool,
    /// Which hop served and why, for `X-Canopy-Hop`.
    pub route: String,
}

fn reason(mode: RoundRobin) -> &'static str {
    match mode {
        RoundRobin::False => "in_order",
        RoundRobin::True => "client_address",
        RoundRobin::Strict => "strict",
        RoundRobin::ConsistentHash => "consistent_hash",
    }
}

/// The hops to try for a request.
pub fn plan<'a>(runtime: &'a Runtime, method: &Method, parts: &Parts) -> Plan<'a> {
    let config = &runtime.config;
    let direct = |go_direct: bool| !config.never_direct.0 && go_direct;
    // A request that has been through us already must not go round again.
    if is_loop(&parts.headers, &config.visible_name) || config.always_direct.0 {
        return Plan {
            hops: if config.never_direct.0 {
                Vec::new()
            } else {
                vec![Hop::Origin]
            },
            rule: 0,
            reason: if config.always_direct.0 {
                "always_direct"
            } else {
                "loop"
            },
            skipped: Vec::new(),
        };
    }
    let route: &Route = runtime
        .routes
        .iter()
        .find(|r| r.matches(method, &parts.uri))
        .unwrap_or(&runtime.default_route);
    let candidates: Vec<Candidate<'_>> = route
        .parents
        .iter()
        .map(|&(i, weight)| Candidate {
            name: &runtime.parents[i].name,
            weight,
        })
        .collect();
    let client = parts
        .extensions
        .get::<ClientAddr>()
        .map(|c| c.0)
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let url = parts.uri.to_string();
    let order = selection::order(
        route.round_robin,
        &candidates,
        &url,
        client,
        &route.rotation,
    );
    let now = Instant::now();
    let mut hops = Vec::new();
    let mut skipped = Vec::new();
    for i in order {
        let parent = &runtime.parents[route.parents[i].0];
        if parent.stats.health.available(now, runtime.retry_time) {
            hops.push(Hop::Parent(parent));
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
    let reason = if hops.is_empty() {
        "direct"
    } else {
        reason(route.round_robin)
    };
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
) -> Result<Fetched, (ProxyError, String)> {
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
    let may_retry = !had_body && idempotent(&parts.method);
    let plan = plan(runtime, &parts.method, parts);
    let mut tried: Vec<String> = plan.skipped.clone();
    let mut answered_badly = false;
    let hop_count = plan.hops.len();
    for (n, hop) in plan.hops.iter().enumerate() {
        let is_last = n + 1 == hop_count;
        // The log's hierarchy code and X-Canopy-Hop are written only when they will be read.
        let logged = runtime.access_log.is_some();
        let explained = runtime.config.debug_headers.0;
        let (client, hierarchy, parent, name, route) = match hop {
            Hop::Parent(p) => (
                &p.client,
                if logged {
                    let code = if plan.reason == "in_order" {
                        "FIRSTUP_PARENT"
                    } else {
                        "ROUNDROBIN_PARENT"
                    };
                    format!("{code}/{}", p.host)
                } else {
                    String::new()
                },
                Some(*p),
                p.name.as_str(),
                if explained {
                    format!(
                        "parent={} rule={} reason={}",
                        p.name, plan.rule, plan.reason
                    )
                } else {
                    String::new()
                },
            ),
            Hop::Origin => (
                &runtime.origin,
                if logged {
                    format!("HIER_DIRECT/{}", parts.uri.host().unwrap_or("-"))
                } else {
                    String::new()
                },
                None,
                authority.as_str(),
                if explained {
                    let why = if n == 0 {
                        plan.reason
                    } else {
                        "parents_failed"
                    };
                    format!("direct rule={} reason={why}", plan.rule)
                } else {
                    String::new()
                },
            ),
        };
        if n > 0 {
            // A body goes once: after a failed attempt it is gone.
            if had_body {
                break;
            }
            runtime.stats.retries.fetch_add(1, Relaxed);
        }
        let mut request = Request::new(
            body.take()
                .map(|b| b.map_err(BoxError::from).boxed_unsync())
                .unwrap_or_else(empty_body),
        );
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = Version::HTTP_11;
        // The last hop can have the fields themselves; earlier ones need a copy to retry with.
        *request.headers_mut() = if is_last {
            std::mem::take(&mut headers)
        } else {
            headers.clone()
        };
        let attempt = tokio::time::timeout(runtime.read_timeout, client.request(request)).await;
        let failure = match attempt {
            Ok(Ok(response)) => {
                let status = response.status();
                if let Some(parent) = parent {
                    parent.stats.fetches.fetch_add(1, Relaxed);
                    if let Some(len) = response.headers().get(http::header::CONTENT_LENGTH) {
                        let len: u64 = len.to_str().ok().and_then(|l| l.parse().ok()).unwrap_or(0);
                        parent.stats.bytes.fetch_add(len, Relaxed);
                    }
                    if parent.stats.health.record_success() {
                        tracing::info!("parent {} is up again", parent.name);
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
                return Ok(Fetched {
                    response,
                    hierarchy,
                    may_store: true,
                    route,
                });
            }
            Ok(Err(e)) if e.is_connect() => format!("connect: {}", innermost(&e)),
            Ok(Err(e)) => innermost(&e),
            Err(_) => format!("no response within {} ms", runtime.read_timeout.as_millis()),
        };
        tracing::info!("{name} failed: {failure}");
        tried.push(format!("{name}: {failure}"));
        if let Some(parent) = parent {
            parent.stats.record_failure(failure.clone());
            let config = &runtime.config;
            if parent.stats.health.record_failure(
                Instant::now(),
                config.fail_threshold,
                runtime.retry_time,
                &failure,
            ) {
                tracing::warn!("parent {} marked down: {failure}", parent.name);
            }
        }
        let connect_failed = failure.starts_with("connect: ");
        if !(connect_failed || may_retry) || matches!(hop, Hop::Origin) {
            let error = if failure.starts_with("no response") || failure.contains("timed out") {
                ProxyError::gateway_timeout(format!("{name}: {failure}"))
            } else if connect_failed && matches!(hop, Hop::Origin) {
                ProxyError::bad_gateway(format!("cannot connect to {name}: {}", &failure[9..]))
            } else {
                ProxyError::bad_gateway(format!("{name} failed: {failure}"))
            };
            return Err((error, hierarchy));
        }
    }
    let reason = if had_body && !tried.is_empty() {
        format!(
            "the request body was sent once and cannot be sent again: {}",
            tried.join("; ")
        )
    } else if tried.is_empty() {
        "never_direct is on and no parent is configured".to_owned()
    } else if runtime.config.never_direct.0 {
        format!(
            "never_direct is on and no parent could serve: {}",
            tried.join("; ")
        )
    } else {
        format!(
            "no hop could serve (going direct is not allowed by rule {}): {}",
            plan.rule,
            tried.join("; ")
        )
    };
    let status = if answered_badly {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::GATEWAY_TIMEOUT
    };
    Err((ProxyError::new(status, reason), "HIER_NONE/-".to_owned()))
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
