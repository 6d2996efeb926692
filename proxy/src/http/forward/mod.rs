//! Forwarding one request: from the cache when it may, otherwise through the next hop,
//! storing what may be stored on the way.

mod accounted;
mod cached;
mod fill;
mod purge;
mod ranges;

pub use accounted::Accounted;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use hyper::body::Incoming;

use crate::access_log::{self, Hierarchy, LogCode};
use crate::digest;
use crate::hierarchy::ClientAddr;
use crate::http::body::ProxyBody;
use crate::http::errors::ProxyError;
use crate::http::headers::{append_via, times_seen};
use crate::http::interim::InterimRelay;
use crate::http::max_forwards::{self, Hops};
use crate::http::tunnel;
use crate::runtime::{Runtime, Shared};
use crate::stats::clients::ClientCounters;
use crate::stats::Stats;
use accounted::Accounting;
use cached::cached;
use fill::{forward_uncached, pass_through};

/// A response on its way to the client, with what the log and counters need to know.
struct Served {
    response: Response<ProxyBody>,
    result: LogCode,
    hierarchy: Hierarchy,
    /// Answered or refused here before the cache or a next hop was asked: counted as
    /// neither hit nor miss.
    answered_here: bool,
    /// Which hop served and why (`X-Canopy-Hop`), for fetched responses.
    hop: Option<String>,
}

impl Served {
    /// A response of this proxy's own, before the cache or a next hop was asked.
    fn answered(response: Response<ProxyBody>) -> Served {
        Served {
            response,
            result: LogCode::Miss,
            hierarchy: Hierarchy::NONE,
            answered_here: true,
            hop: None,
        }
    }

    /// A miss served from the fill that another client's request leads.
    fn joined(response: Response<ProxyBody>) -> Served {
        Served {
            answered_here: false,
            ..Served::answered(response)
        }
    }

    /// An error page for a request refused before the cache or a next hop was asked.
    fn refused(error: ProxyError, runtime: &Runtime) -> Served {
        Served {
            answered_here: true,
            ..Served::failed(error, runtime, Hierarchy::NONE)
        }
    }

    /// An error page for a request the cache could not serve.
    fn failed(error: ProxyError, runtime: &Runtime, hierarchy: Hierarchy) -> Served {
        Served {
            response: error.to_response(&runtime.config.visible_name),
            result: if error.status == StatusCode::FORBIDDEN {
                LogCode::Denied
            } else {
                LogCode::Miss
            },
            hierarchy,
            answered_here: false,
            hop: None,
        }
    }

    /// A response fetched from the next hop.
    fn fetched(
        response: Response<ProxyBody>,
        result: LogCode,
        hierarchy: Hierarchy,
        route: String,
    ) -> Served {
        Served {
            response,
            result,
            hierarchy,
            answered_here: false,
            hop: Some(route),
        }
    }

    fn is_from_cache(&self) -> bool {
        matches!(
            self.result,
            LogCode::Hit
                | LogCode::HitStale
                | LogCode::StaleHit
                | LogCode::RefreshUnmodified
                | LogCode::RefreshFailOld
        )
    }

    /// Adds the request to the hit or miss counters: once per request, here.
    fn count(&self, stats: &Stats) {
        if self.answered_here {
            return;
        }
        let counter = match self.result {
            LogCode::Hit => &stats.hits_fresh,
            LogCode::HitStale | LogCode::StaleHit | LogCode::RefreshFailOld => &stats.hits_stale,
            LogCode::RefreshUnmodified => &stats.hits_revalidated,
            LogCode::RefreshModified | LogCode::Miss | LogCode::Denied | LogCode::Tunnel => {
                &stats.misses
            }
        };
        counter.add(1);
    }
}

/// Named once: a `&str` name is parsed again on every response.
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// A request as it arrives: what it is handled with, whoever it came from, and when its
/// connection must close.
#[derive(Clone, Copy)]
struct Arrival<'a> {
    shared: &'a Arc<Shared>,
    runtime: &'a Arc<Runtime>,
    client: SocketAddr,
    closes_at: tokio::time::Instant,
    relay: Option<&'a InterimRelay>,
}

/// Entry point for every request on a client connection; `counted` are the client's own
/// counters where it is a peer or child; `closes_at` is the end of the connection's
/// lifetime, which a tunnel it becomes must keep to; `relay` is where interim responses
/// from upstream go.
pub async fn handle(
    shared: Arc<Shared>,
    client: SocketAddr,
    counted: Option<Arc<ClientCounters>>,
    relay: Option<&InterimRelay>,
    mut req: Request<Incoming>,
    closes_at: tokio::time::Instant,
) -> Result<Response<Accounted>, Infallible> {
    let started = Instant::now();
    let time = SystemTime::now();
    let runtime = shared.runtime.load_full();
    shared.stats.requests.add(1);
    let target = strip_userinfo(req.uri_mut());
    tracing::debug!(%client, method = %req.method(), url = %req.uri(), "request");
    // The access log's fields, taken before the request is consumed, only when logging.
    let logged = runtime
        .access_log
        .is_some()
        .then(|| (req.method().to_string(), req.uri().to_string()));
    let arrival = Arrival {
        shared: &shared,
        runtime: &runtime,
        client,
        closes_at,
        relay,
    };
    let served = if digest::server::is_digest_request(&runtime.config, req.uri()) {
        // The proxy's own resource, for peers and children: never looked up or forwarded.
        Served::answered(digest::server::answer(
            &shared,
            &runtime.config,
            req.method(),
            req.headers(),
        ))
    } else if let Err(e) = target {
        Served::refused(e, &runtime)
    } else if purge::is_purge(req.method()) {
        // Answered here whoever asks, a sibling too: never forwarded upstream.
        match check_target(req.uri()) {
            Ok(()) => purge::purge(&shared, &runtime, client.ip(), req.uri(), req.headers()).await,
            Err(e) => Served::refused(e, &runtime),
        }
    } else if let Some(peer) = runtime.misses_denied_to(client.ip()) {
        hits_only(&arrival, peer, req).await
    } else {
        route(&arrival, req).await
    };
    served.count(&shared.stats);
    if served.response.status().is_server_error() {
        shared.stats.errors.add(1);
    }
    let from_cache = served.is_from_cache();
    let mut response = served.response;
    let headers = response.headers_mut();
    append_via(headers, &runtime.via);
    let x_cache = if from_cache {
        &runtime.x_cache_hit
    } else {
        &runtime.x_cache_miss
    };
    headers.insert(X_CACHE, x_cache.clone());
    if runtime.config.debug_headers.0 {
        let hop = served
            .hop
            .as_deref()
            .unwrap_or(if from_cache { "cache" } else { "none" });
        if let Ok(value) = HeaderValue::from_str(hop) {
            headers.insert("x-canopy-hop", value);
        }
    }
    let entry = logged.map(|(method, url)| access_log::Entry {
        time,
        elapsed: started.elapsed(),
        client: client.ip(),
        result: served.result,
        status: response.status().as_u16(),
        bytes: 0,
        method,
        url,
        hierarchy: served.hierarchy,
        content_type: response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
    });
    let done = Accounting {
        shared: shared.clone(),
        runtime,
        from_cache,
        started,
        entry,
        counted,
    };
    Ok(response.map(|body| Accounted::new(body, done)))
}

async fn route(arrival: &Arrival<'_>, mut req: Request<Incoming>) -> Served {
    let Arrival {
        shared,
        runtime,
        client,
        closes_at,
        relay,
    } = *arrival;
    if req.method() == Method::CONNECT {
        return match tunnel::handle(shared.clone(), runtime.clone(), req, closes_at).await {
            Ok((response, hierarchy)) => Served {
                result: LogCode::Tunnel,
                hierarchy,
                ..Served::answered(response)
            },
            Err(e) => Served::refused(e, runtime),
        };
    }
    if max_forwards::applies_to(req.method()) {
        match max_forwards::hops(req.headers()) {
            Ok(Hops::Unlimited) => {}
            Ok(Hops::Onward(left)) => {
                req.headers_mut().insert(header::MAX_FORWARDS, left);
            }
            Ok(Hops::AnswerHere) => {
                let (parts, _) = req.into_parts();
                return Served::answered(max_forwards::answer(&parts));
            }
            Err(e) => {
                let error = ProxyError::bad_request(e.to_string());
                return Served::refused(error, runtime);
            }
        }
    }
    if let Err(e) = check_target(req.uri()) {
        return Served::refused(e, runtime);
    }
    if let Err(denied) = runtime.reach.check_port(req.uri().port_u16().unwrap_or(80)) {
        shared.stats.denied_destinations.add(1);
        return Served::refused(denied.into(), runtime);
    }
    if times_seen(req.headers(), &runtime.config.visible_name) >= 2 {
        let error = ProxyError::new(
            StatusCode::LOOP_DETECTED,
            format!(
                "Forwarding loop: this request has passed through {} before, even when sent direct",
                runtime.config.visible_name
            ),
        );
        return Served::refused(error, runtime);
    }
    let (mut parts, body) = req.into_parts();
    // Routing by client address reads it from here.
    parts
        .extensions
        .insert(ClientAddr(client.ip(), relay.cloned()));
    if parts.method == Method::GET || parts.method == Method::HEAD {
        if body.is_end_stream() {
            cached(shared, runtime, parts).await
        } else {
            // A GET or HEAD with a body goes on with it, past the cache: what the body
            // means to the origin is unknown, and dropping it would leave its framing to
            // be read from the upstream connection as the start of another message.
            forward_uncached(shared, runtime, &parts, Some(body)).await
        }
    } else {
        pass_through(shared, runtime, parts, body).await
    }
}

/// On a request of a peer whose misses are denied: the peer's name, for the 504 of a miss.
#[derive(Debug, Clone)]
pub struct MissesDenied(pub String);

/// A peer whose misses are denied (`deny_misses`, Squid's `miss_access deny`) takes hits
/// from us, never misses: its requests are answered from the cache only, as if they said
/// `only-if-cached`.
async fn hits_only(arrival: &Arrival<'_>, peer: &str, mut req: Request<Incoming>) -> Served {
    let cacheable = req.method() == Method::GET || req.method() == Method::HEAD;
    if !cacheable || !req.body().is_end_stream() {
        let with_body = if req.body().is_end_stream() {
            ""
        } else {
            " with a body"
        };
        return Served::refused(
            ProxyError::gateway_timeout(format!(
                "{}{with_body} from peer {peer}, whose misses are denied here (its deny_misses \
                 option): it takes hits only",
                req.method()
            )),
            arrival.runtime,
        );
    }
    req.headers_mut().append(
        header::CACHE_CONTROL,
        HeaderValue::from_static("only-if-cached"),
    );
    req.extensions_mut().insert(MissesDenied(peer.to_owned()));
    route(arrival, req).await
}

/// Credentials written in the URL (`http://user:pw@host/`) go no further than here: not
/// into Host, the cache key, the upstream request line or the log.
fn strip_userinfo(uri: &mut Uri) -> Result<(), ProxyError> {
    let Some((_, host)) = uri.authority().and_then(|a| a.as_str().rsplit_once('@')) else {
        return Ok(());
    };
    let unreadable = || ProxyError::bad_request("the URL cannot be read without its credentials");
    let host = host.parse().map_err(|_| unreadable())?;
    let mut parts = std::mem::take(uri).into_parts();
    parts.authority = Some(host);
    *uri = Uri::from_parts(parts).map_err(|_| unreadable())?;
    Ok(())
}

/// A forward proxy takes absolute-form `http://` requests only.
fn check_target(uri: &Uri) -> Result<(), ProxyError> {
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) => Ok(()),
        (Some(scheme), Some(_)) => Err(ProxyError::bad_request(format!(
            "{scheme}:// URLs are not proxied here; https goes through CONNECT"
        ))),
        _ => Err(ProxyError::bad_request(format!(
            "This is a proxy: the request line must carry a whole URL such as http://example.com/, not {uri:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::empty_body;

    #[test]
    fn hits_are_counted_fresh_stale_or_revalidated_and_answers_here_not_at_all() {
        let stats = Stats::default();
        let served = |result, answered_here| Served {
            result,
            answered_here,
            ..Served::answered(Response::new(empty_body()))
        };
        for result in [
            LogCode::Hit,
            LogCode::HitStale,
            LogCode::StaleHit,
            LogCode::RefreshFailOld,
            LogCode::RefreshUnmodified,
            LogCode::RefreshModified,
            LogCode::Miss,
            LogCode::Denied,
        ] {
            served(result, false).count(&stats);
        }
        served(LogCode::Denied, true).count(&stats);
        served(LogCode::Tunnel, true).count(&stats);
        let counted = |c: &crate::stats::Counter| c.get();
        assert_eq!(counted(&stats.hits_fresh), 1);
        assert_eq!(counted(&stats.hits_stale), 3);
        assert_eq!(counted(&stats.hits_revalidated), 1);
        assert_eq!(counted(&stats.misses), 3);
    }

    #[test]
    fn origin_form_requests_are_refused() {
        let e = check_target(&"/index.html".parse().unwrap()).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.reason.contains("whole URL"));
        assert!(check_target(&"http://a/".parse().unwrap()).is_ok());
        assert!(check_target(&"ftp://a/".parse().unwrap()).is_err());
    }

    #[test]
    fn credentials_are_taken_out_of_the_url() {
        let mut uri: Uri = "http://alice:s3cret@Example.com:8080/a?b=1"
            .parse()
            .unwrap();
        strip_userinfo(&mut uri).unwrap();
        assert_eq!(uri, "http://Example.com:8080/a?b=1");
        let mut connect: Uri = "bob@example.com:443".parse().unwrap();
        strip_userinfo(&mut connect).unwrap();
        assert_eq!(connect.authority().unwrap(), "example.com:443");
        let mut plain: Uri = "http://example.com/".parse().unwrap();
        strip_userinfo(&mut plain).unwrap();
        assert_eq!(plain, "http://example.com/");
    }
}
