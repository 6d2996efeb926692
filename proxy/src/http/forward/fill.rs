//! Fetching from upstream: a miss filled through a `Fill` that every waiting client reads
//! and that is stored when complete, or a response passed straight through.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;
use http::{Method, Response, StatusCode, Uri};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::access_log::LogCode;
use crate::cache::collapse::{Fill, Leader, Next, Pushed, Room};
use crate::cache::disk::ObjectHead;
use crate::cache::disk_tier::DiskFill;
use crate::cache::key::cache_key;
use crate::cache::policy::{self, StoredTimes};
use crate::cache::store::Stored;
use crate::hierarchy;
use crate::htcp::{self, codec::ClrReason};
use crate::http::body::{empty_body, BoxError, ProxyBody};
use crate::http::headers::remove_hop_by_hop;
use crate::runtime::{Runtime, Shared};

use super::cached::{not_modified, Asks, CacheRequest};
use super::ranges;
use super::Served;

/// Request fields that make a request conditional or partial; the cache asks its own
/// questions, of whole representations.
pub(super) const CONDITIONALS: [header::HeaderName; 6] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

pub(super) fn fill_matches(fill: &Fill, request: &HeaderMap) -> bool {
    match &fill.vary {
        None => true,
        Some(values) => policy::vary_matches(values, request),
    }
}

/// The client's response streamed from a fill that is still arriving, with `headers`: the
/// fill's, or for the client whose request fetched it, the origin's whole answer; cut to the
/// request's ranges. `None` when the fill takes no more readers.
pub(super) fn from_fill(
    parts: &Parts,
    fill: &Arc<Fill>,
    headers: HeaderMap,
    max_object_size: u64,
) -> Option<Response<ProxyBody>> {
    // A POST's own conditionals were the origin's to answer.
    if fill.status == StatusCode::OK
        && parts.method != Method::POST
        && policy::client_not_modified(&parts.headers, &headers)
    {
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
    if !ranges::asks_for_range(parts) {
        return Some(response);
    }
    // A range reader that leaves early would leave a fill to be stored without readers:
    // it reads on to the end when the whole will be kept.
    let stored_whole = content_length(&fill.headers).is_some_and(|len| len <= max_object_size);
    Some(ranges::cut(parts, response, stored_whole))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The client's request fields without its conditionals and Range: the cache asks its own
/// questions upstream, of the whole representation, and answers the client's itself.
pub(super) fn unconditional(headers: &HeaderMap) -> HeaderMap {
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
pub(super) async fn fetch_and_fill(req: &CacheRequest<'_>, leader: Option<Leader>) -> Served {
    let (runtime, parts) = (req.runtime, req.parts);
    let request_time = SystemTime::now();
    match hierarchy::fetch(runtime, parts, unconditional(&parts.headers), None).await {
        Ok(fetched) => store_and_serve(req, fetched, request_time, leader, LogCode::Miss),
        Err((error, hierarchy)) => Served::failed(error, runtime, hierarchy),
    }
}

/// Serves an upstream response to a GET, storing it on the way when it may be stored.
pub(super) fn store_and_serve(
    req: &CacheRequest<'_>,
    fetched: hierarchy::Fetched,
    request_time: SystemTime,
    leader: Option<Leader>,
    result: LogCode,
) -> Served {
    let (shared, runtime, parts, key) = (req.shared, req.runtime, req.parts, req.key);
    let (mut head, body) = fetched.response.into_parts();
    remove_hop_by_hop(&mut head.headers);
    let max = runtime.config.max_object_size.0;
    let length = content_length(&head.headers);
    let too_big = length.is_some_and(|len| len > max);
    let storable = !too_big
        && fetched.may_store
        && policy::is_storable(
            &Method::GET,
            &parts.headers,
            head.status,
            &head.headers,
            &runtime.targets,
        );
    let vary = policy::vary_request_values(&head.headers, &parts.headers);
    if !storable || vary.is_none() && head.headers.contains_key(header::VARY) {
        shared.stats.uncacheable.add(1);
        // A POST's response says nothing of what a GET of the URL gets.
        if parts.method == Method::GET {
            shared.in_flight.unshared(key);
        }
        if let Some(leader) = leader {
            leader.finish();
        }
        let mut response = Response::from_parts(head, body.map_err(BoxError::from).boxed_unsync());
        if parts.method == Method::HEAD {
            *response.body_mut() = empty_body();
        }
        let response = ranges::cut(parts, response, false);
        return Served::fetched(response, result, fetched.hierarchy, fetched.route);
    }
    // What the origin meant for this client alone (its cookies) stays out of the shared
    // copy that waiting clients, later hits and the store get.
    let strip = policy::fields_to_strip(&head.headers, &runtime.targets);
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
    // With a disk tier, the fill holds in memory only what memory may keep; the rest
    // streams to disk as it arrives.
    let keep = match shared.disk.as_ref() {
        Some(_) => max.min(runtime.config.max_object_size_in_memory.0),
        None => max,
    };
    let disk = shared.disk.as_ref().and_then(|disk| {
        let times = StoredTimes {
            request_time,
            response_time: SystemTime::now(),
        };
        let head = ObjectHead {
            status: head.status,
            headers: head.headers.clone(),
            times,
            vary: vary.clone(),
        };
        disk.fill(key, head)
    });
    let fill = Fill::new(
        head.status,
        head.headers,
        vary,
        keep,
        length,
        disk.is_some(),
    );
    let headers = own_headers.unwrap_or_else(|| fill.headers.clone());
    // Attached before anyone else sees the fill: a new fill takes readers.
    let Some(response) = from_fill(parts, &fill, headers, max) else {
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
        disk,
        max,
        received: 0,
        targets: runtime.targets.clone(),
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
    /// The object on its way to disk; dropped (and nothing left on disk) when a write
    /// fails or the body passes `max_object_size`.
    disk: Option<DiskFill>,
    /// `max_object_size`.
    max: u64,
    received: u64,
    /// The cache's target list (RFC 9213), for the freshness worked out on storing.
    targets: Vec<HeaderName>,
}

impl Filling {
    /// Generic over the body so that tests can fill from memory; the proxy fills from an
    /// [`UpstreamBody`](crate::hierarchy::upstream::UpstreamBody).
    async fn run<B>(mut self, mut body: B)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
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
                        if self.fill.push(data.clone()) == Pushed::PassedLimit {
                            self.pass_through();
                        }
                        self.write_to_disk(data).await;
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
                &self.targets,
            );
            self.shared.store.load().insert(&self.key, stored);
            self.shared.in_flight.shared_again(&self.key);
        }
        if let Some(disk) = self.disk.take() {
            if disk.commit().await {
                self.shared.in_flight.shared_again(&self.key);
            }
        }
        if let Some(leader) = self.leader {
            leader.finish();
        }
    }

    /// Hands a chunk to the disk writer, giving the write up past `max_object_size`.
    async fn write_to_disk(&mut self, data: Bytes) {
        self.received += data.len() as u64;
        let Some(disk) = &self.disk else {
            return;
        };
        if self.received > self.max || !disk.write(data).await {
            self.disk = None;
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

/// Everything but GET and HEAD: forwarded as is; a successful unsafe method invalidates
/// what the cache holds for the URL. A POST response that says it is the URL's current
/// representation is then stored for later GETs of it (RFC 9110 §9.3.3).
pub(super) async fn pass_through(
    shared: &Arc<Shared>,
    runtime: &Arc<Runtime>,
    parts: Parts,
    body: Incoming,
) -> Served {
    let request_time = SystemTime::now();
    let fetched = match hierarchy::fetch(runtime, &parts, parts.headers.clone(), Some(body)).await {
        Ok(fetched) => fetched,
        Err((error, hierarchy)) => return Served::failed(error, runtime, hierarchy),
    };
    let (status, headers) = (fetched.response.status(), fetched.response.headers());
    if policy::invalidates(&parts.method, status) {
        invalidate(shared, runtime, &parts.uri, headers).await;
    }
    let for_get = parts.method == Method::POST
        && policy::post_reusable_for_get(
            &parts.uri,
            &parts.headers,
            status,
            headers,
            &runtime.targets,
        );
    if !for_get {
        return uncached(shared, fetched);
    }
    let key = cache_key(&parts.uri);
    let req = CacheRequest {
        shared,
        runtime,
        parts: &parts,
        key: &key,
        asks: Asks::of(&parts.headers),
    };
    store_and_serve(&req, fetched, request_time, None, LogCode::Miss)
}

/// Removes what the cache holds for `target`, and for the same-origin Location and
/// Content-Location of the response to an unsafe method (RFC 9111 §4.4).
async fn invalidate(
    shared: &Arc<Shared>,
    runtime: &Arc<Runtime>,
    target: &Uri,
    response: &HeaderMap,
) {
    // As Squid, the peers that take CLR are told of each URL invalidated.
    let remove = |url: String| async move {
        shared.remove_everywhere(&url).await;
        let no_headers = HeaderMap::new();
        htcp::querier::send_clr(runtime, &url, ClrReason::Invalidation, &no_headers).await;
    };
    remove(cache_key(target)).await;
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let named = response
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Uri>().ok());
        if let Some(named) = named {
            if named.authority() == target.authority() {
                remove(cache_key(&named)).await;
            }
        }
    }
}

pub(super) async fn forward_uncached(
    shared: &Arc<Shared>,
    runtime: &Arc<Runtime>,
    parts: &Parts,
    body: Option<Incoming>,
) -> Served {
    match hierarchy::fetch(runtime, parts, parts.headers.clone(), body).await {
        Ok(fetched) => uncached(shared, fetched),
        Err((error, hierarchy)) => Served::failed(error, runtime, hierarchy),
    }
}

/// An upstream response passed on, not stored.
fn uncached(shared: &Arc<Shared>, fetched: hierarchy::Fetched) -> Served {
    shared.stats.uncacheable.add(1);
    let (mut head, body) = fetched.response.into_parts();
    remove_hop_by_hop(&mut head.headers);
    let response = Response::from_parts(head, body.map_err(BoxError::from).boxed_unsync());
    Served::fetched(response, LogCode::Miss, fetched.hierarchy, fetched.route)
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_config::config::Config;
    use http::HeaderValue;
    use http_body_util::Full;

    #[tokio::test]
    async fn a_body_filled_whole_is_stored_and_its_reader_gets_it() {
        let shared = Shared::for_tests(Config::default());
        let fill = Fill::new(
            StatusCode::OK,
            HeaderMap::new(),
            None,
            1 << 20,
            Some(5),
            false,
        );
        let mut reader = fill.attach().expect("a new fill takes readers");
        let filling = Filling {
            shared: shared.clone(),
            key: "http://example.com/".to_owned(),
            fill,
            request_time: SystemTime::now(),
            leader: None,
            disk: None,
            max: 1 << 20,
            received: 0,
            targets: Vec::new(),
        };
        filling.run(Full::new(Bytes::from_static(b"hello"))).await;
        let stored = shared
            .store
            .load()
            .lookup("http://example.com/", &HeaderMap::new());
        assert_eq!(stored.expect("stored").body, "hello");
        assert!(matches!(reader.next().await, Next::Chunk(chunk) if chunk == "hello"));
        assert!(matches!(reader.next().await, Next::End));
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
