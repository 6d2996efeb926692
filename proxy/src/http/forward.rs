//! Forwarding one request: from the cache when it may, otherwise through the next hop,
//! storing what may be stored on the way.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::access_log::{self, Hierarchy, LogCode};
use crate::cache::collapse::{Fill, InFlight, Join, Leader, Next, Outcome, Pushed, Room};
use crate::cache::key::cache_key;
use crate::cache::policy::{self, CacheControl, Reuse, StoredTimes};
use crate::cache::store::Stored;
use crate::hierarchy::upstream::UpstreamBody;
use crate::hierarchy::{self, ClientAddr};
use crate::http::errors::ProxyError;
use crate::http::headers::{append_via, is_loop, remove_hop_by_hop, times_seen};
use crate::http::max_forwards::{self, Hops};
use crate::http::{empty_body, full_body, tunnel, BoxError, ProxyBody};
use crate::runtime::{Runtime, Shared};
use crate::stats::Stats;

/// Request fields that make a request conditional; the cache asks its own questions.
const CONDITIONALS: [header::HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

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

/// Entry point for every request on a client connection; `closes_at` is the end of the
/// connection's lifetime, which a tunnel it becomes must keep to.
pub async fn handle(
    shared: Arc<Shared>,
    client: SocketAddr,
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
    let served = if let Err(e) = target {
        Served::refused(e, &runtime)
    } else if runtime.is_hits_only_sibling(client.ip()) {
        hits_only(&shared, &runtime, client, req, closes_at).await
    } else {
        route(&shared, &runtime, client, req, closes_at).await
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
    headers.insert("x-cache", x_cache.clone());
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
    };
    Ok(response.map(|body| Accounted::new(body, done)))
}

async fn route(
    shared: &Arc<Shared>,
    runtime: &Arc<Runtime>,
    client: SocketAddr,
    mut req: Request<Incoming>,
    closes_at: tokio::time::Instant,
) -> Served {
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
    parts.extensions.insert(ClientAddr(client.ip()));
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

/// A configured sibling takes hits from us, never misses (Squid's `miss_access deny`):
/// its requests are answered from the cache only, as if they said `only-if-cached`.
async fn hits_only(
    shared: &Arc<Shared>,
    runtime: &Arc<Runtime>,
    client: SocketAddr,
    mut req: Request<Incoming>,
    closes_at: tokio::time::Instant,
) -> Served {
    let cacheable = req.method() == Method::GET || req.method() == Method::HEAD;
    if !cacheable || !req.body().is_end_stream() {
        let with_body = if req.body().is_end_stream() {
            ""
        } else {
            " with a body"
        };
        return Served::refused(
            ProxyError::gateway_timeout(format!(
                "{}{with_body} from a sibling cache: a sibling takes hits only",
                req.method()
            )),
            runtime,
        );
    }
    req.headers_mut().append(
        header::CACHE_CONTROL,
        HeaderValue::from_static("only-if-cached"),
    );
    route(shared, runtime, client, req, closes_at).await
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

/// GET and HEAD: served from the cache when fresh, revalidated when stale, fetched once
/// for all concurrent clients when missing.
async fn cached(shared: &Arc<Shared>, runtime: &Arc<Runtime>, parts: Parts) -> Served {
    let key = cache_key(&parts.uri);
    let request_cc = CacheControl::parse_request(&parts.headers);
    let credentials = parts.headers.contains_key(header::AUTHORIZATION);
    let store = shared.store.load_full();
    if !credentials {
        if let Some(stored) = store.lookup(&key, &parts.headers) {
            let now = SystemTime::now();
            let plain = !parts.headers.contains_key(header::CACHE_CONTROL)
                && !parts.headers.contains_key(header::PRAGMA);
            if let Some(age) = stored.fresh_age(now).filter(|_| plain) {
                return serve_stored(&parts, &stored, age, LogCode::Hit);
            }
            let reuse = policy::evaluate(
                &Method::GET,
                &parts.headers,
                stored.status,
                &stored.headers(),
                &stored.times(),
                now,
                &runtime.heuristics,
            );
            match reuse {
                Reuse::Fresh { age } => {
                    return serve_stored(&parts, &stored, age, LogCode::Hit);
                }
                Reuse::Stale { age } => {
                    return serve_stored(&parts, &stored, age, LogCode::HitStale);
                }
                Reuse::StaleWhileRevalidate { age } => {
                    revalidate_in_background(shared, runtime, &parts, &key, &stored);
                    return serve_stored(&parts, &stored, age, LogCode::StaleHit);
                }
                Reuse::Revalidate { .. } if request_cc.only_if_cached => {}
                Reuse::Revalidate { .. } => {
                    return revalidate(shared, runtime, &parts, &key, stored).await
                }
                Reuse::Miss => {}
            }
        }
    }
    if request_cc.only_if_cached {
        return Served::failed(
            ProxyError::gateway_timeout(format!(
                "{key} is not in the cache, and the request said only-if-cached"
            )),
            runtime,
            Hierarchy::NONE,
        );
    }
    if parts.method == Method::HEAD || credentials || runtime.config.cache_mem.0 == 0 {
        return forward_uncached(shared, runtime, &parts, None).await;
    }
    // A request that comes back to us is part of a fetch already under way here: waiting
    // for that fetch would wait for itself.
    if is_loop(&parts.headers, &runtime.config.visible_name) {
        return fetch_and_fill(shared, runtime, &parts, &key, None).await;
    }
    match shared.in_flight.join(&key) {
        Join::Leader(leader) => fetch_and_fill(shared, runtime, &parts, &key, Some(leader)).await,
        Join::Follower(waiting) => {
            let shared_fill = match InFlight::wait(waiting).await {
                Outcome::Shared(fill) if fill_matches(&fill, &parts.headers) => {
                    from_fill(&parts, &fill, fill.headers.clone())
                }
                _ => None,
            };
            match shared_fill {
                Some(response) => Served {
                    answered_here: false,
                    ..Served::answered(response)
                },
                // Not shareable, or the fill was past max_object_size or abandoned by now.
                None => fetch_and_fill(shared, runtime, &parts, &key, None).await,
            }
        }
        Join::Alone => fetch_and_fill(shared, runtime, &parts, &key, None).await,
    }
}

fn fill_matches(fill: &Fill, request: &HeaderMap) -> bool {
    match &fill.vary {
        None => true,
        Some(values) => policy::vary_matches(values, request),
    }
}

/// A response from the store, with its current Age; 304 when it answers the client's own
/// conditional request.
fn serve_stored(parts: &Parts, stored: &Stored, age: Duration, result: LogCode) -> Served {
    let mut headers = stored.headers();
    headers.insert(header::AGE, policy::age_header(age));
    let response = respond(parts, stored.status, headers, Some(stored.body.clone()));
    Served {
        response,
        result,
        hierarchy: Hierarchy::NONE,
        answered_here: false,
        hop: None,
    }
}

fn age_now(stored: &Stored) -> Duration {
    policy::current_age(&stored.headers(), &stored.times(), SystemTime::now())
}

/// Builds the client's response from a (stored or arriving) response's parts.
fn respond(
    parts: &Parts,
    status: StatusCode,
    mut headers: HeaderMap,
    body: Option<Bytes>,
) -> Response<ProxyBody> {
    if status == StatusCode::OK && policy::client_not_modified(&parts.headers, &headers) {
        return not_modified(headers);
    }
    let body = match body {
        Some(bytes) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            if parts.method == Method::HEAD {
                empty_body()
            } else {
                full_body(bytes)
            }
        }
        None => empty_body(),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A 304 carrying the fields RFC 9110 §15.4.5 asks for.
fn not_modified(headers: HeaderMap) -> Response<ProxyBody> {
    let mut response = Response::new(empty_body());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::LAST_MODIFIED,
        header::AGE,
    ] {
        for value in headers.get_all(&name) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}

/// The client's response streamed from a fill that is still arriving, with `headers`: the
/// fill's, or for the client whose request fetched it, the origin's whole answer. `None`
/// when the fill takes no more readers.
fn from_fill(parts: &Parts, fill: &Arc<Fill>, headers: HeaderMap) -> Option<Response<ProxyBody>> {
    if fill.status == StatusCode::OK && policy::client_not_modified(&parts.headers, &headers) {
        return Some(not_modified(headers));
    }
    let body = if parts.method == Method::HEAD {
        empty_body()
    } else {
        let chunks = futures_util::stream::unfold(Some(fill.attach()?), |reader| async move {
            let mut reader = reader?;
            match reader.next().await {
                Next::Chunk(chunk) => Some((Ok(Frame::data(chunk)), Some(reader))),
                Next::End => None,
                Next::Broken(reason) => Some((Err(BoxError::from(reason)), None)),
            }
        });
        http_body_util::StreamBody::new(chunks).boxed_unsync()
    };
    let mut response = Response::new(body);
    *response.status_mut() = fill.status;
    *response.headers_mut() = headers;
    Some(response)
}

/// The client's request fields without its conditionals: the cache asks its own questions
/// upstream and answers the client's itself.
fn unconditional(headers: &HeaderMap) -> HeaderMap {
    let mut headers = headers.clone();
    // Most requests carry no conditional: looking costs less than five removals.
    while let Some(name) = headers
        .keys()
        .find(|name| CONDITIONALS.contains(name))
        .cloned()
    {
        headers.remove(name);
    }
    headers
}

/// Fetches a missing object. When the response may be stored it is streamed to the client
/// through a fill (which waiting clients share), otherwise passed straight through.
async fn fetch_and_fill(
    shared: &Arc<Shared>,
    runtime: &Arc<Runtime>,
    parts: &Parts,
    key: &str,
    leader: Option<Leader>,
) -> Served {
    let request_time = SystemTime::now();
    match hierarchy::fetch(runtime, parts, unconditional(&parts.headers), None).await {
        Ok(fetched) => store_and_serve(
            shared,
            runtime,
            parts,
            key,
            fetched,
            request_time,
            leader,
            LogCode::Miss,
        ),
        Err((error, hierarchy)) => Served::failed(error, runtime, hierarchy),
    }
}

/// Serves an upstream response to a GET, storing it on the way when it may be stored.
#[allow(clippy::too_many_arguments)]
fn store_and_serve(
    shared: &Arc<Shared>,
    runtime: &Arc<Runtime>,
    parts: &Parts,
    key: &str,
    fetched: hierarchy::Fetched,
    request_time: SystemTime,
    leader: Option<Leader>,
    result: LogCode,
) -> Served {
    let (mut head, body) = fetched.response.into_parts();
    remove_hop_by_hop(&mut head.headers);
    let max = runtime.config.max_object_size.0;
    let length = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_big = length.is_some_and(|len| len > max);
    let storable = !too_big
        && fetched.may_store
        && policy::is_storable(&Method::GET, &parts.headers, head.status, &head.headers);
    let vary = policy::vary_request_values(&head.headers, &parts.headers);
    if !storable || vary.is_none() && head.headers.contains_key(header::VARY) {
        shared.stats.uncacheable.add(1);
        shared.in_flight.unshared(key);
        if let Some(leader) = leader {
            leader.finish();
        }
        let mut response = Response::from_parts(head, body.map_err(BoxError::from).boxed_unsync());
        if parts.method == Method::HEAD {
            *response.body_mut() = empty_body();
        }
        return Served::fetched(response, result, fetched.hierarchy, fetched.route);
    }
    // What the origin meant for this client alone (its cookies) stays out of the shared
    // copy that waiting clients, later hits and the store get.
    let strip = policy::fields_to_strip(&head.headers);
    let own_headers = strip
        .iter()
        .any(|name| head.headers.contains_key(name))
        .then(|| head.headers.clone());
    for name in strip {
        head.headers.remove(name);
    }
    let vary = if head.headers.contains_key(header::VARY) {
        vary
    } else {
        None
    };
    let fill = Fill::new(head.status, head.headers, vary, max, length);
    let headers = own_headers.unwrap_or_else(|| fill.headers.clone());
    // Attached before anyone else sees the fill: a new fill takes readers.
    let Some(response) = from_fill(parts, &fill, headers) else {
        unreachable!("a new fill refused its first reader")
    };
    if let Some(leader) = &leader {
        leader.share(fill.clone());
    }
    let filling = Filling {
        shared: shared.clone(),
        key: key.to_owned(),
        fill,
        request_time,
        leader,
    };
    tokio::spawn(filling.run(body));
    Served::fetched(response, result, fetched.hierarchy, fetched.route)
}

/// Reads an upstream body into a fill, and stores it when complete and kept. Past
/// `max_object_size` it goes on only as fast as the slowest reader, and it stops reading
/// (dropping the upstream connection) when every reader has left.
struct Filling {
    shared: Arc<Shared>,
    key: String,
    fill: Arc<Fill>,
    request_time: SystemTime,
    leader: Option<Leader>,
}

impl Filling {
    async fn run(mut self, mut body: UpstreamBody) {
        loop {
            if self.fill.room().await == Room::Abandoned {
                return self.abandon();
            }
            let frame = tokio::select! {
                frame = body.frame() => frame,
                () = self.fill.abandoned() => return self.abandon(),
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if self.fill.push(data) == Pushed::PassedLimit {
                            self.pass_through();
                        }
                    }
                }
                Some(Err(e)) => {
                    self.fill.finish(Err(e.to_string()));
                    return;
                }
                None => break,
            }
        }
        self.fill.finish(Ok(()));
        if let Some(body) = self.fill.body() {
            let times = StoredTimes {
                request_time: self.request_time,
                response_time: SystemTime::now(),
            };
            let stored = Stored::new(
                self.fill.status,
                self.fill.headers.clone(),
                body,
                times,
                self.fill.vary.clone(),
            );
            self.shared.store.load().insert(&self.key, stored);
            self.shared.in_flight.shared_again(&self.key);
        }
        if let Some(leader) = self.leader {
            leader.finish();
        }
    }

    /// Past `max_object_size` with no length announced: later clients fetch for themselves,
    /// without waiting on each other (hit-for-miss).
    fn pass_through(&mut self) {
        tracing::debug!(key = %self.key, "past max_object_size: passing through");
        self.shared.in_flight.unshared(&self.key);
        if let Some(leader) = self.leader.take() {
            leader.finish();
        }
    }

    /// Every client left. Returning drops the upstream body, which closes its connection
    /// mid-message rather than pooling it; dropping the leader lets later clients fetch anew.
    fn abandon(self) {
        tracing::debug!(key = %self.key, "every client left: fetch abandoned");
    }
}

/// Asks upstream whether a stale stored response is still good.
async fn revalidate(
    shared: &Arc<Shared>,
    runtime: &Arc<Runtime>,
    parts: &Parts,
    key: &str,
    stored: Arc<Stored>,
) -> Served {
    let mut headers = unconditional(&parts.headers);
    let stored_headers = stored.headers();
    headers.extend(policy::conditional_request_headers(&stored_headers));
    let request_time = SystemTime::now();
    let now = || SystemTime::now();
    let stale_ok = |stored: &Stored| {
        policy::may_serve_stale_on_error(
            &parts.headers,
            stored.status,
            &stored.headers(),
            &stored.times(),
            now(),
            &runtime.heuristics,
        )
    };
    match hierarchy::fetch(runtime, parts, headers, None).await {
        Ok(fetched) if fetched.response.status() == StatusCode::NOT_MODIFIED => {
            let not_modified = fetched.response.headers();
            if !policy::not_modified_matches(&stored_headers, not_modified) {
                return fetch_and_fill(shared, runtime, parts, key, None).await;
            }
            let times = StoredTimes {
                request_time,
                response_time: SystemTime::now(),
            };
            let refreshed = Stored::new(
                stored.status,
                policy::merge_not_modified(&stored_headers, not_modified),
                stored.body.clone(),
                times,
                stored.vary().map(<[_]>::to_vec),
            );
            let mut served = serve_stored(
                parts,
                &refreshed,
                age_now(&refreshed),
                LogCode::RefreshUnmodified,
            );
            served.hierarchy = fetched.hierarchy;
            // Cookies on the 304 answered this client's revalidation: for it alone.
            for name in &policy::FOR_ONE_CLIENT {
                for value in not_modified.get_all(name) {
                    served.response.headers_mut().append(name, value.clone());
                }
            }
            shared.store.load().insert(key, refreshed);
            served
        }
        Ok(fetched) if fetched.response.status().is_server_error() && stale_ok(&stored) => {
            serve_stored(parts, &stored, age_now(&stored), LogCode::RefreshFailOld)
        }
        Ok(fetched) => store_and_serve(
            shared,
            runtime,
            parts,
            key,
            fetched,
            request_time,
            None,
            LogCode::RefreshModified,
        ),
        Err(_) if stale_ok(&stored) => {
            serve_stored(parts, &stored, age_now(&stored), LogCode::RefreshFailOld)
        }
        Err((error, hierarchy)) => Served::failed(error, runtime, hierarchy),
    }
}

/// stale-while-revalidate: one background revalidation per URL at a time.
fn revalidate_in_background(
    shared: &Arc<Shared>,
    runtime: &Arc<Runtime>,
    parts: &Parts,
    key: &str,
    stored: &Arc<Stored>,
) {
    let Join::Leader(leader) = shared.in_flight.join(key) else {
        return;
    };
    let (shared, runtime, key, stored) = (
        shared.clone(),
        runtime.clone(),
        key.to_owned(),
        stored.clone(),
    );
    let mut background = Request::new(());
    *background.method_mut() = Method::GET;
    *background.uri_mut() = parts.uri.clone();
    *background.headers_mut() = parts.headers.clone();
    let (parts, ()) = background.into_parts();
    tokio::spawn(async move {
        let served = revalidate(&shared, &runtime, &parts, &key, stored).await;
        served.count(&shared.stats);
        // Read what the client would have read, so a changed object is stored, keeping none
        // of it here: the fill holds what the store gets.
        let mut body = served.response.into_body();
        while let Some(Ok(_)) = body.frame().await {}
        leader.finish();
    });
}

/// Everything but GET and HEAD: forwarded as is; a successful unsafe method invalidates
/// what the cache holds for the URL.
async fn pass_through(
    shared: &Arc<Shared>,
    runtime: &Arc<Runtime>,
    parts: Parts,
    body: Incoming,
) -> Served {
    let served = forward_uncached(shared, runtime, &parts, Some(body)).await;
    if policy::invalidates(&parts.method, served.response.status()) {
        let store = shared.store.load();
        store.remove(&cache_key(&parts.uri));
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let target = served
                .response
                .headers()
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Uri>().ok());
            if let Some(target) = target {
                if target.authority() == parts.uri.authority() {
                    store.remove(&cache_key(&target));
                }
            }
        }
    }
    served
}

async fn forward_uncached(
    shared: &Arc<Shared>,
    runtime: &Arc<Runtime>,
    parts: &Parts,
    body: Option<Incoming>,
) -> Served {
    match hierarchy::fetch(runtime, parts, parts.headers.clone(), body).await {
        Ok(fetched) => {
            shared.stats.uncacheable.add(1);
            let (mut head, body) = fetched.response.into_parts();
            remove_hop_by_hop(&mut head.headers);
            let response = Response::from_parts(head, body.map_err(BoxError::from).boxed_unsync());
            Served::fetched(response, LogCode::Miss, fetched.hierarchy, fetched.route)
        }
        Err((error, hierarchy)) => Served::failed(error, runtime, hierarchy),
    }
}

/// What is counted and logged once the client has its response (or has gone away).
struct Accounting {
    shared: Arc<Shared>,
    runtime: Arc<Runtime>,
    from_cache: bool,
    started: Instant,
    entry: Option<access_log::Entry>,
}

/// A response body that counts the bytes sent, and logs the request when it is done.
/// Handed to hyper as it is: boxing it again would cost an allocation a response.
pub struct Accounted {
    inner: ProxyBody,
    sent: u64,
    done: Option<Accounting>,
}

impl Accounted {
    fn new(inner: ProxyBody, done: Accounting) -> Accounted {
        Accounted {
            inner,
            sent: 0,
            done: Some(done),
        }
    }
}

impl Body for Accounted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.sent += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Accounted {
    fn drop(&mut self) {
        let Some(mut done) = self.done.take() else {
            return;
        };
        let counter = if done.from_cache {
            &done.shared.stats.bytes_from_cache
        } else {
            &done.shared.stats.bytes_from_upstream
        };
        counter.add(self.sent);
        if let (Some(log), Some(mut entry)) = (&done.runtime.access_log, done.entry.take()) {
            entry.bytes = self.sent;
            entry.elapsed = done.started.elapsed();
            log.write(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn every_conditional_field_is_dropped_and_the_rest_kept() {
        let mut h = HeaderMap::new();
        for name in &CONDITIONALS {
            h.append(name, HeaderValue::from_static("x"));
        }
        h.append(header::IF_NONE_MATCH, HeaderValue::from_static("\"b\""));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        let left = unconditional(&h);
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[header::ACCEPT], "text/html");
    }
}
