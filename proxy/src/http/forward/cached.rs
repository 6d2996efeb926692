//! Serving a stored response: the lookup that decides between hit, revalidation and miss,
//! the response built from what the store holds, and revalidation (in the foreground, or
//! in the background under stale-while-revalidate).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::access_log::{Hierarchy, LogCode};
use crate::cache::collapse::{InFlight, Join, Outcome};
use crate::cache::key::cache_key;
use crate::cache::policy::{self, CacheControl, Reuse, StoredTimes};
use crate::cache::store::Stored;
use crate::hierarchy;
use crate::http::body::{empty_body, full_body, ProxyBody};
use crate::http::errors::ProxyError;
use crate::http::headers::is_loop;
use crate::runtime::{Runtime, Shared};

use super::fill::{
    fetch_and_fill, fill_matches, forward_uncached, from_fill, store_and_serve, unconditional,
};
use super::{MissesDenied, Served};

/// A GET or HEAD on the cache path, with what each step of it reads.
pub(super) struct CacheRequest<'a> {
    pub shared: &'a Arc<Shared>,
    pub runtime: &'a Arc<Runtime>,
    pub parts: &'a Parts,
    /// The URL's cache key.
    pub key: &'a str,
}

/// GET and HEAD: served from the cache when fresh, revalidated when stale, fetched once
/// for all concurrent clients when missing.
pub(super) async fn cached(shared: &Arc<Shared>, runtime: &Arc<Runtime>, parts: Parts) -> Served {
    let key = cache_key(&parts.uri);
    let req = CacheRequest {
        shared,
        runtime,
        parts: &parts,
        key: &key,
    };
    let request_cc = CacheControl::parse_request(&parts.headers);
    let credentials = parts.headers.contains_key(header::AUTHORIZATION);
    if !credentials {
        if let Some(served) = from_store(&req, request_cc.only_if_cached).await {
            return served;
        }
    }
    if request_cc.only_if_cached {
        return Served::failed(
            ProxyError::gateway_timeout(match parts.extensions.get::<MissesDenied>() {
                Some(MissesDenied(peer)) => format!(
                    "{key} is not in the cache, and peer {peer} may not fetch misses here (its \
                     deny_misses option)"
                ),
                None => format!("{key} is not in the cache, and the request said only-if-cached"),
            }),
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
        return fetch_and_fill(&req, None).await;
    }
    match shared.in_flight.join(&key) {
        Join::Leader(leader) => fetch_and_fill(&req, Some(leader)).await,
        Join::Follower(waiting) => {
            let shared_fill = match InFlight::wait(waiting).await {
                Outcome::Shared(fill) if fill_matches(&fill, &parts.headers) => {
                    from_fill(&parts, &fill, fill.headers.clone())
                }
                _ => None,
            };
            match shared_fill {
                Some(response) => Served::joined(response),
                // Not shareable, or the fill was past max_object_size or abandoned by now.
                None => fetch_and_fill(&req, None).await,
            }
        }
        Join::Alone => fetch_and_fill(&req, None).await,
    }
}

/// What the store holds for the request, served or revalidated; `None` when nothing it
/// holds may be used (or it would need a revalidation that `only-if-cached` forbids).
async fn from_store(req: &CacheRequest<'_>, only_if_cached: bool) -> Option<Served> {
    let parts = req.parts;
    let store = req.shared.store.load_full();
    let stored = store.lookup(req.key, &parts.headers)?;
    let now = SystemTime::now();
    let plain = !parts.headers.contains_key(header::CACHE_CONTROL)
        && !parts.headers.contains_key(header::PRAGMA);
    if let Some(age) = stored.fresh_age(now).filter(|_| plain) {
        return Some(serve_stored(parts, &stored, age, LogCode::Hit));
    }
    let headers = stored.headers();
    let reuse = policy::evaluate(
        &Method::GET,
        &parts.headers,
        &stored.policy_view(&headers),
        now,
        &req.runtime.heuristics,
    );
    match reuse {
        Reuse::Fresh { age } => Some(serve_stored(parts, &stored, age, LogCode::Hit)),
        Reuse::Stale { age } => Some(serve_stored(parts, &stored, age, LogCode::HitStale)),
        Reuse::StaleWhileRevalidate { age } => {
            revalidate_in_background(req, &stored);
            Some(serve_stored(parts, &stored, age, LogCode::StaleHit))
        }
        Reuse::Revalidate { .. } if only_if_cached => None,
        Reuse::Revalidate { .. } => Some(revalidate(req, stored).await),
        Reuse::Miss => None,
    }
}

/// A response from the store, with its current Age; 304 when it answers the client's own
/// conditional request.
pub(super) fn serve_stored(
    parts: &Parts,
    stored: &Stored,
    age: Duration,
    result: LogCode,
) -> Served {
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

pub(super) fn age_now(stored: &Stored) -> Duration {
    policy::current_age(&stored.headers(), &stored.times(), SystemTime::now())
}

/// Builds the client's response from a (stored or arriving) response's parts.
pub(super) fn respond(
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
pub(super) fn not_modified(headers: HeaderMap) -> Response<ProxyBody> {
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

/// Asks upstream whether a stale stored response is still good.
async fn revalidate(req: &CacheRequest<'_>, stored: Arc<Stored>) -> Served {
    let (shared, runtime, parts, key) = (req.shared, req.runtime, req.parts, req.key);
    let mut headers = unconditional(&parts.headers);
    let stored_headers = stored.headers();
    headers.extend(policy::conditional_request_headers(&stored_headers));
    let request_time = SystemTime::now();
    let now = || SystemTime::now();
    let stale_ok = |stored: &Stored| {
        let headers = stored.headers();
        policy::may_serve_stale_on_error(
            &parts.headers,
            &stored.policy_view(&headers),
            now(),
            &runtime.heuristics,
        )
    };
    match hierarchy::fetch(runtime, parts, headers, None).await {
        Ok(fetched) if fetched.response.status() == StatusCode::NOT_MODIFIED => {
            let not_modified = fetched.response.headers();
            if !policy::not_modified_matches(&stored_headers, not_modified) {
                return fetch_and_fill(req, None).await;
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
        Ok(fetched) => store_and_serve(req, fetched, request_time, None, LogCode::RefreshModified),
        Err(_) if stale_ok(&stored) => {
            serve_stored(parts, &stored, age_now(&stored), LogCode::RefreshFailOld)
        }
        Err((error, hierarchy)) => Served::failed(error, runtime, hierarchy),
    }
}

/// stale-while-revalidate: one background revalidation per URL at a time.
fn revalidate_in_background(req: &CacheRequest<'_>, stored: &Arc<Stored>) {
    let Join::Leader(leader) = req.shared.in_flight.join(req.key) else {
        return;
    };
    let (shared, runtime, key, stored) = (
        req.shared.clone(),
        req.runtime.clone(),
        req.key.to_owned(),
        stored.clone(),
    );
    let mut background = Request::new(());
    *background.method_mut() = Method::GET;
    *background.uri_mut() = req.parts.uri.clone();
    *background.headers_mut() = req.parts.headers.clone();
    let (parts, ()) = background.into_parts();
    tokio::spawn(async move {
        let req = CacheRequest {
            shared: &shared,
            runtime: &runtime,
            parts: &parts,
            key: &key,
        };
        let served = revalidate(&req, stored).await;
        served.count(&shared.stats);
        // Read what the client would have read, so a changed object is stored, keeping none
        // of it here: the fill holds what the store gets.
        let mut body = served.response.into_body();
        while let Some(Ok(_)) = body.frame().await {}
        leader.finish();
    });
}
