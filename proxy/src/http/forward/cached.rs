//! Serving a stored response: the lookup that decides between hit, revalidation and miss,
//! the response built from what the store holds, and revalidation (in the foreground, or
//! in the background under stale-while-revalidate).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::access_log::{Hierarchy, LogCode};
use crate::cache::collapse::{InFlight, Join, Leader, Outcome};
use crate::cache::disk::{DiskEntry, ObjectHead};
use crate::cache::disk_tier::DiskFound;
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
use super::ranges::{self, RangeMiss};
use super::{MissesDenied, Served};

/// A GET or HEAD on the cache path, with what each step of it reads.
pub(super) struct CacheRequest<'a> {
    pub shared: &'a Arc<Shared>,
    pub runtime: &'a Arc<Runtime>,
    pub parts: &'a Parts,
    /// The URL's cache key.
    pub key: &'a str,
    /// Its fields that bear on serving a stored response, looked at once.
    pub asks: Asks,
}

/// Which of the request fields that change how a stored response is used the request has,
/// found in one pass over its fields: most requests have none, and each field looked up
/// by name costs a hash and a probe, several times per hit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Asks {
    /// Cache-Control or Pragma: directives of its own.
    pub directives: bool,
    pub authorization: bool,
    pub range: bool,
    /// If-None-Match or If-Modified-Since, which the cache answers itself.
    pub conditional: bool,
}

impl Asks {
    pub fn of(headers: &HeaderMap) -> Asks {
        let mut asks = Asks::default();
        for name in headers.keys() {
            if name == header::CACHE_CONTROL || name == header::PRAGMA {
                asks.directives = true;
            } else if name == header::AUTHORIZATION {
                asks.authorization = true;
            } else if name == header::RANGE {
                asks.range = true;
            } else if name == header::IF_NONE_MATCH || name == header::IF_MODIFIED_SINCE {
                asks.conditional = true;
            }
        }
        asks
    }

    /// The request's cache directives: [`CacheControl::parse_request`], not parsed when it
    /// has no field that holds any.
    fn directives(self, headers: &HeaderMap) -> CacheControl {
        if self.directives {
            CacheControl::parse_request(headers)
        } else {
            CacheControl::default()
        }
    }

    /// [`ranges::asks_for_range`], from what is known.
    fn range_of(self, parts: &Parts) -> bool {
        self.range && parts.method == Method::GET
    }
}

/// GET and HEAD: served from the cache when fresh, revalidated when stale, fetched once
/// for all concurrent clients when missing.
pub(super) async fn cached(shared: &Arc<Shared>, runtime: &Arc<Runtime>, parts: Parts) -> Served {
    let key = cache_key(&parts.uri);
    let asks = Asks::of(&parts.headers);
    let req = CacheRequest {
        shared,
        runtime,
        parts: &parts,
        key: &key,
        asks,
    };
    let request_cc = asks.directives(&parts.headers);
    let ranged = asks.range_of(&parts);
    let on_disk = match from_store(&req, request_cc.only_if_cached).await {
        Ok(served) => return served,
        Err(on_disk) => on_disk,
    };
    if let Some(served) = ranged.then(|| ranges::from_partial(&req)).flatten() {
        return served;
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
    let caching = runtime.config.cache_mem.0 > 0 || shared.disk.as_ref().is_some();
    if parts.method == Method::HEAD || !caching {
        return forward_uncached(shared, runtime, &parts, None).await;
    }
    // Passed upstream alone, with or without credentials: never collapsed.
    if ranged
        && ranges::range_miss(&parts, runtime.config.range_offset_limit.0) == RangeMiss::AsAsked
    {
        return ranges::fetch_as_asked(&req).await;
    }
    // Its answer is its own unless the origin says it is shared (RFC 9111 §3.5): never
    // waited on by, nor waiting on, other clients' fetches.
    if asks.authorization {
        return fetch_and_fill(&req, None).await;
    }
    // A request that comes back to us is part of a fetch already under way here: waiting
    // for that fetch would wait for itself.
    if is_loop(&parts.headers, &runtime.config.visible_name) {
        return fetch_and_fill(&req, None).await;
    }
    match shared.in_flight.join(&key) {
        Join::Leader(leader) => fetch_variant(&req, Some(leader), on_disk).await,
        Join::Follower(waiting) => {
            let shared_fill = match InFlight::wait(waiting).await {
                Outcome::Shared(fill) if fill_matches(&fill, &parts.headers) => from_fill(
                    &parts,
                    &fill,
                    fill.headers.clone(),
                    runtime.config.max_object_size.0,
                ),
                _ => None,
            };
            match shared_fill {
                Some(response) => Served::joined(response),
                // Another variant, not shareable, or the fill was past max_object_size or
                // abandoned by now.
                None => fetch_variant(&req, None, on_disk).await,
            }
        }
        Join::Alone => fetch_variant(&req, None, on_disk).await,
    }
}

/// A miss for a URL with other variants in memory or `on_disk`: asked upstream with all
/// their ETags, so that a 304 naming one of them has it serve this request too (RFC 9111
/// §4.1: a cache can "validate with the origin server using all stored responses"; §4.3.4:
/// "If the new response contains a strong validator [...], then that strong validator
/// identifies the selected representation for update"). The selected variant is refreshed,
/// headers included, and stored again for requests like this one; one held on disk only is
/// read into memory for that when it fits there, else refreshed on disk and streamed from
/// there. Otherwise a plain miss.
async fn fetch_variant(
    req: &CacheRequest<'_>,
    leader: Option<Leader>,
    on_disk: Vec<DiskEntry>,
) -> Served {
    let (shared, runtime, parts) = (req.shared, req.runtime, req.parts);
    let store = shared.store.load_full();
    let variants = store.variants(req.key);
    let heads: Vec<HeaderMap> = variants.iter().map(|stored| stored.headers()).collect();
    // Memory's first: a variant held in both tiers is then refreshed in memory.
    let all_heads = || {
        heads
            .iter()
            .chain(on_disk.iter().map(|e| &e.head().headers))
    };
    let Some(condition) = policy::variants_condition(all_heads()) else {
        return fetch_and_fill(req, leader).await;
    };
    let mut headers = unconditional(&parts.headers);
    headers.insert(header::IF_NONE_MATCH, condition);
    let request_time = SystemTime::now();
    let fetched = match hierarchy::fetch(runtime, parts, headers, None).await {
        Ok(fetched) if fetched.response.status() == StatusCode::NOT_MODIFIED => fetched,
        Ok(fetched) => return store_and_serve(req, fetched, request_time, leader, LogCode::Miss),
        Err((error, hierarchy)) => return Served::failed(error, runtime, hierarchy),
    };
    let not_modified = fetched.response.headers();
    let Some(at) = policy::selected_variant(all_heads(), not_modified) else {
        return fetch_and_fill(req, leader).await;
    };
    let times = StoredTimes {
        request_time,
        response_time: SystemTime::now(),
    };
    let targets = &runtime.targets;
    // A variant on disk only is read into memory when it fits there, and refreshed in both.
    let (chosen, on_disk_only) = match variants.get(at) {
        Some(chosen) => (chosen.clone(), None),
        None => {
            let entry = on_disk[at - variants.len()].clone();
            match whole_in_memory(req, &entry).await {
                Some(stored) => (stored, Some(entry)),
                None => {
                    let held = Held::Disk(entry);
                    let head = ObjectHead {
                        status: held.status(),
                        headers: policy::merge_not_modified(&held.headers(), not_modified, targets),
                        times,
                        vary: held.vary(),
                    };
                    let served = refreshed(req, &held, head).await;
                    if let Some(leader) = leader {
                        leader.finish();
                    }
                    return match served {
                        Some(served) => Served {
                            hierarchy: fetched.hierarchy,
                            ..served
                        },
                        None => fetch_and_fill(req, None).await,
                    };
                }
            }
        }
    };
    let merged = policy::merge_not_modified(&chosen.headers(), not_modified, targets);
    if let (Some(entry), Some(disk)) = (on_disk_only, shared.disk.as_ref()) {
        let head = ObjectHead {
            status: chosen.status,
            headers: merged.clone(),
            times,
            vary: chosen.vary().map(<[_]>::to_vec),
        };
        disk.update_entry_head(entry, head);
    }
    let for_this_request = Stored::new(
        chosen.status,
        merged.clone(),
        chosen.body.clone(),
        times,
        policy::vary_request_values(&merged, &parts.headers),
        targets,
    );
    let vary = chosen.vary().map(<[_]>::to_vec);
    let refreshed = Stored::new(
        chosen.status,
        merged,
        chosen.body.clone(),
        times,
        vary,
        targets,
    );
    let age = age_now(&for_this_request);
    let mut served = serve_stored(req, &for_this_request, age, LogCode::RefreshUnmodified);
    served.hierarchy = fetched.hierarchy;
    store.insert(req.key, refreshed);
    store.insert(req.key, for_this_request);
    if let Some(leader) = leader {
        leader.finish();
    }
    served
}

/// What the store holds for the request, served or revalidated. When nothing it holds may be
/// used (or it would need a revalidation that `only-if-cached` forbids): the URL's variants
/// found on disk, none of which the request selects, for the miss to validate with.
async fn from_store(
    req: &CacheRequest<'_>,
    only_if_cached: bool,
) -> Result<Served, Vec<DiskEntry>> {
    let parts = req.parts;
    let store = req.shared.store.load_full();
    let Some(stored) = store.lookup(req.key, &parts.headers) else {
        return from_disk(req, only_if_cached).await;
    };
    let plain = !req.asks.directives && !req.asks.authorization;
    if let Some(age) = stored.fresh_age(SystemTime::now()).filter(|_| plain) {
        return Ok(serve_stored(req, &stored, age, LogCode::Hit));
    }
    reuse(req, Held::Memory(stored), only_if_cached)
        .await
        .ok_or_else(Vec::new)
}

/// A memory miss looked up on disk. An object that fits `max_object_size_in_memory` is
/// read whole and promoted to memory on its second disk hit within a while (see
/// `disk_tier::promotion`): the next hit is a memory hit. The rest are streamed from disk.
async fn from_disk(req: &CacheRequest<'_>, only_if_cached: bool) -> Result<Served, Vec<DiskEntry>> {
    let Some(disk) = req.shared.disk.as_ref() else {
        return Err(Vec::new());
    };
    let entry = match disk.lookup(req.key, &req.parts.headers).await {
        DiskFound::Variant(entry) => entry,
        DiskFound::Others(others) => return Err(others),
    };
    if !fits_in_memory(req, &entry) || !disk.promotes(req.key) {
        return reuse(req, Held::Disk(entry), only_if_cached)
            .await
            .ok_or_else(Vec::new);
    }
    let body = disk.read_whole(entry.clone()).await.ok_or_else(Vec::new)?;
    let stored = entry.into_stored(body, &req.runtime.targets);
    req.shared.store.load().insert(req.key, stored.clone());
    let served = reuse(req, Held::Memory(Arc::new(stored)), only_if_cached).await;
    if served.as_ref().is_some_and(Served::is_from_cache) {
        disk.served_whole();
    }
    served.ok_or_else(Vec::new)
}

/// Whether an object on disk may also be held in memory (`max_object_size_in_memory`).
fn fits_in_memory(req: &CacheRequest<'_>, entry: &DiskEntry) -> bool {
    let config = &req.runtime.config;
    entry.body_len() <= config.max_object_size_in_memory.0 && config.cache_mem.0 > 0
}

/// A variant found on disk, read whole for memory when it fits there; `None` otherwise, or
/// on a fault.
async fn whole_in_memory(req: &CacheRequest<'_>, entry: &DiskEntry) -> Option<Arc<Stored>> {
    let disk = req.shared.disk.as_ref()?;
    if !fits_in_memory(req, entry) {
        return None;
    }
    let body = disk.read_whole(entry.clone()).await?;
    Some(Arc::new(
        entry.clone().into_stored(body, &req.runtime.targets),
    ))
}

/// A stored response found for a request: in memory, or on disk only (too large for
/// memory), where its body stays until it is streamed.
#[derive(Clone)]
enum Held {
    Memory(Arc<Stored>),
    Disk(DiskEntry),
}

impl Held {
    fn status(&self) -> StatusCode {
        match self {
            Held::Memory(stored) => stored.status,
            Held::Disk(entry) => entry.head().status,
        }
    }

    fn headers(&self) -> HeaderMap {
        match self {
            Held::Memory(stored) => stored.headers(),
            Held::Disk(entry) => entry.head().headers.clone(),
        }
    }

    fn times(&self) -> StoredTimes {
        match self {
            Held::Memory(stored) => stored.times(),
            Held::Disk(entry) => entry.head().times,
        }
    }

    fn vary(&self) -> Option<Vec<(HeaderName, Option<String>)>> {
        match self {
            Held::Memory(stored) => stored.vary().map(<[_]>::to_vec),
            Held::Disk(entry) => entry.head().vary.clone(),
        }
    }

    /// This response as the reuse rules read it, with its `headers()`.
    fn policy_view<'a>(&self, headers: &'a HeaderMap) -> policy::StoredResponse<'a> {
        policy::StoredResponse {
            status: self.status(),
            headers,
            times: self.times(),
        }
    }

    fn age_now(&self, headers: &HeaderMap) -> Duration {
        policy::current_age(headers, &self.times(), SystemTime::now())
    }
}

/// What the reuse rules make of a held response: served, revalidated, or a miss.
async fn reuse(req: &CacheRequest<'_>, held: Held, only_if_cached: bool) -> Option<Served> {
    let (parts, targets) = (req.parts, &req.runtime.targets);
    let headers = held.headers();
    if req.asks.authorization && !policy::answers_credentials(&headers, targets) {
        return None;
    }
    let reuse = policy::evaluate(
        &Method::GET,
        &parts.headers,
        &held.policy_view(&headers),
        SystemTime::now(),
        &req.runtime.heuristics,
        targets,
    );
    match reuse {
        Reuse::Fresh { age } => serve_held(req, &held, headers, age, LogCode::Hit).await,
        Reuse::Stale { age } => serve_held(req, &held, headers, age, LogCode::HitStale).await,
        Reuse::StaleWhileRevalidate { age } => {
            revalidate_in_background(req, &held);
            serve_held(req, &held, headers, age, LogCode::StaleHit).await
        }
        Reuse::Revalidate { .. } if only_if_cached => None,
        Reuse::Revalidate { .. } => Some(revalidate(req, held).await),
        Reuse::Miss => None,
    }
}

/// A held response served with `headers`; `None` when its body cannot be read from disk
/// (a fault, counted by the store): the caller fetches instead.
async fn serve_held(
    req: &CacheRequest<'_>,
    held: &Held,
    headers: HeaderMap,
    age: Duration,
    result: LogCode,
) -> Option<Served> {
    let body = match held {
        Held::Memory(stored) => Some(stored.body.clone()),
        Held::Disk(_) => None,
    };
    let mut headers = headers;
    headers.insert(header::AGE, policy::age_header(age));
    let response = match held {
        Held::Memory(stored) => respond(req, stored.status, headers, body),
        Held::Disk(entry) => stream_from_disk(req, entry, headers).await?,
    };
    Some(Served {
        response,
        result,
        hierarchy: Hierarchy::NONE,
        answered_here: false,
        hop: None,
    })
}

/// The client's response with a body streamed from disk; none read for a HEAD or a 304.
async fn stream_from_disk(
    req: &CacheRequest<'_>,
    entry: &DiskEntry,
    mut headers: HeaderMap,
) -> Option<Response<ProxyBody>> {
    let (parts, status) = (req.parts, entry.head().status);
    if status == StatusCode::OK && policy::client_not_modified(&parts.headers, &headers) {
        return Some(not_modified(headers));
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body_len()));
    let body = if parts.method == Method::HEAD {
        empty_body()
    } else {
        req.shared.disk.as_ref()?.stream(entry.clone()).await?
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Some(ranges::cut(parts, response, false))
}

/// A response from the store, with its current Age; 304 when it answers the client's own
/// conditional request.
fn serve_stored(req: &CacheRequest<'_>, stored: &Stored, age: Duration, result: LogCode) -> Served {
    let mut headers = stored.headers();
    headers.insert(header::AGE, policy::age_header(age));
    let response = respond(req, stored.status, headers, Some(stored.body.clone()));
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

/// Builds the client's response from a stored response's parts.
fn respond(
    req: &CacheRequest<'_>,
    status: StatusCode,
    mut headers: HeaderMap,
    body: Option<Bytes>,
) -> Response<ProxyBody> {
    let parts = req.parts;
    if req.asks.conditional
        && status == StatusCode::OK
        && policy::client_not_modified(&parts.headers, &headers)
    {
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
    if !req.asks.range {
        return response;
    }
    ranges::cut(parts, response, false)
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
async fn revalidate(req: &CacheRequest<'_>, held: Held) -> Served {
    let (runtime, parts) = (req.runtime, req.parts);
    let mut headers = unconditional(&parts.headers);
    let stored_headers = held.headers();
    headers.extend(policy::conditional_request_headers(&stored_headers));
    let request_time = SystemTime::now();
    let stale_ok = || {
        policy::may_serve_stale_on_error(
            &parts.headers,
            &held.policy_view(&stored_headers),
            SystemTime::now(),
            &runtime.heuristics,
            &runtime.targets,
        )
    };
    match hierarchy::fetch(runtime, parts, headers, None).await {
        Ok(fetched) if fetched.response.status() == StatusCode::NOT_MODIFIED => {
            let not_modified = fetched.response.headers();
            if !policy::not_modified_matches(&stored_headers, not_modified) {
                return fetch_and_fill(req, None).await;
            }
            let head = ObjectHead {
                status: held.status(),
                headers: policy::merge_not_modified(
                    &stored_headers,
                    not_modified,
                    &runtime.targets,
                ),
                times: StoredTimes {
                    request_time,
                    response_time: SystemTime::now(),
                },
                vary: held.vary(),
            };
            let Some(mut served) = refreshed(req, &held, head).await else {
                return fetch_and_fill(req, None).await;
            };
            served.hierarchy = fetched.hierarchy;
            // Cookies on the 304 answered this client's revalidation: for it alone.
            for name in &policy::FOR_ONE_CLIENT {
                for value in not_modified.get_all(name) {
                    served.response.headers_mut().append(name, value.clone());
                }
            }
            served
        }
        Ok(fetched) if fetched.response.status().is_server_error() && stale_ok() => {
            let age = held.age_now(&stored_headers);
            let result = LogCode::RefreshFailOld;
            match serve_held(req, &held, stored_headers.clone(), age, result).await {
                Some(served) => served,
                None => store_and_serve(req, fetched, request_time, None, LogCode::Miss),
            }
        }
        Ok(fetched) => store_and_serve(req, fetched, request_time, None, LogCode::RefreshModified),
        Err((error, hierarchy)) => {
            if stale_ok() {
                let age = held.age_now(&stored_headers);
                let result = LogCode::RefreshFailOld;
                if let Some(served) = serve_held(req, &held, stored_headers, age, result).await {
                    return served;
                }
            }
            // RFC 9111 §5.2.2.2: "if a cache is disconnected, the cache MUST generate an
            // error response rather than reuse the stale response. The generated status code
            // SHOULD be 504 (Gateway Timeout)". The same for any stored response that upstream
            // failed to revalidate, the cause kept in the reason.
            let error = if error.status.is_server_error() {
                ProxyError::gateway_timeout(format!(
                    "{} is stored but must be revalidated, and revalidation failed: {}",
                    req.key, error.reason
                ))
            } else {
                error
            };
            Served::failed(error, runtime, hierarchy)
        }
    }
}

/// A held response refreshed by a 304 (its headers merged, its times new): stored again
/// in its tiers, and served.
async fn refreshed(req: &CacheRequest<'_>, held: &Held, head: ObjectHead) -> Option<Served> {
    let (shared, parts, key) = (req.shared, req.parts, req.key);
    match held {
        Held::Memory(stored) => {
            let refreshed = Stored::new(
                head.status,
                head.headers.clone(),
                stored.body.clone(),
                head.times,
                head.vary.clone(),
                &req.runtime.targets,
            );
            let age = age_now(&refreshed);
            let served = serve_stored(req, &refreshed, age, LogCode::RefreshUnmodified);
            shared.store.load().insert(key, refreshed);
            if let Some(disk) = shared.disk.as_ref() {
                disk.update_head(key, &parts.headers, head);
            }
            Some(served)
        }
        Held::Disk(entry) => {
            let age = policy::current_age(&head.headers, &head.times, SystemTime::now());
            let refreshed = Held::Disk(entry.clone());
            let headers = head.headers.clone();
            if let Some(disk) = shared.disk.as_ref() {
                disk.update_entry_head(entry.clone(), head);
            }
            serve_held(req, &refreshed, headers, age, LogCode::RefreshUnmodified).await
        }
    }
}

/// A 206 fetched for `req`: every stored complete response of the URL with its strong
/// validator (RFC 9111 §4.3.4: "All the stored responses with the same strong validator are
/// identified for update") has its header fields updated from it as from a 304, and its
/// times anew (§3.4). Its body is the partial content's business, not this.
pub(super) async fn refresh_from_partial(
    req: &CacheRequest<'_>,
    partial: &HeaderMap,
    request_time: SystemTime,
) {
    let (shared, targets) = (req.shared, &req.runtime.targets);
    // What may not be stored may not update what is.
    if !policy::is_storable(
        &Method::GET,
        &req.parts.headers,
        StatusCode::OK,
        partial,
        targets,
    ) {
        return;
    }
    let times = StoredTimes {
        request_time,
        response_time: SystemTime::now(),
    };
    let store = shared.store.load_full();
    for stored in store.variants(req.key) {
        let headers = stored.headers();
        if stored.status != StatusCode::OK
            || !policy::partial_updates(&headers, stored.body.len() as u64, partial)
        {
            continue;
        }
        let merged = policy::merge_not_modified(&headers, partial, targets);
        let vary = stored.vary().map(<[_]>::to_vec);
        let refreshed = Stored::new(
            stored.status,
            merged,
            stored.body.clone(),
            times,
            vary,
            targets,
        );
        store.insert(req.key, refreshed);
    }
    let Some(disk) = shared.disk.as_ref() else {
        return;
    };
    let on_disk = match disk.lookup(req.key, &req.parts.headers).await {
        DiskFound::Variant(entry) => vec![entry],
        DiskFound::Others(others) => others,
    };
    for entry in on_disk {
        let stored = entry.head();
        if stored.status != StatusCode::OK
            || !policy::partial_updates(&stored.headers, entry.body_len(), partial)
        {
            continue;
        }
        let head = ObjectHead {
            status: stored.status,
            headers: policy::merge_not_modified(&stored.headers, partial, targets),
            times,
            vary: stored.vary.clone(),
        };
        disk.update_entry_head(entry, head);
    }
}

/// stale-while-revalidate: one background revalidation per URL at a time.
fn revalidate_in_background(req: &CacheRequest<'_>, held: &Held) {
    let Join::Leader(leader) = req.shared.in_flight.join(req.key) else {
        return;
    };
    let (shared, runtime, key, held) = (
        req.shared.clone(),
        req.runtime.clone(),
        req.key.to_owned(),
        held.clone(),
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
            asks: Asks::of(&parts.headers),
        };
        let served = revalidate(&req, held).await;
        served.count(&shared.stats);
        // Read what the client would have read, so a changed object is stored, keeping none
        // of it here: the fill holds what the store gets.
        let mut body = served.response.into_body();
        while let Some(Ok(_)) = body.frame().await {}
        leader.finish();
    });
}

#[cfg(test)]
mod tests;
