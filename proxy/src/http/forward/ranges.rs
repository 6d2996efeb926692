//! Range requests (RFC 9110 §14): a 200 cut to the ranges asked for (206, one part or
//! multipart/byteranges, or 416), whether its body is in memory, on disk or still arriving;
//! ranges answered from held partial content; and a range miss, fetched whole or passed
//! upstream as asked (`range_offset_limit`), its 206 kept as partial content.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::access_log::{Hierarchy, LogCode};
use crate::cache::disk::ObjectHead;
use crate::cache::partial::{Added, Piece, Variant};
use crate::cache::policy::ranges::{self, ByteRange, RangeAnswer};
use crate::cache::policy::{self, Reuse, StoredTimes};
use crate::cache::store::Stored;
use crate::hierarchy;
use crate::http::body::{empty_body, full_body, BoxError, ProxyBody};
use crate::http::headers::remove_hop_by_hop;

use super::cached::{refresh_from_partial, CacheRequest};
use super::fill::{store_and_serve, unconditional};
use super::Served;

/// Whether a request asks for ranges at all: the one look a plain request pays.
pub(super) fn asks_for_range(parts: &Parts) -> bool {
    parts.method == Method::GET && parts.headers.contains_key(header::RANGE)
}

/// A complete 200 answered to a range request: cut to the ranges, or left whole when
/// there is no Range to honour, its length is unknown, or If-Range fails. `drain` reads the
/// rest of the body after the last range, so that the fill it comes from is completed and
/// stored.
pub(super) fn cut(
    parts: &Parts,
    response: Response<ProxyBody>,
    drain: bool,
) -> Response<ProxyBody> {
    if !asks_for_range(parts) || response.status() != StatusCode::OK {
        return response;
    }
    let length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let Some(length) = length else {
        return response;
    };
    match answer(parts, response.headers(), length) {
        RangeAnswer::Whole => response,
        answer => {
            let (head, body) = response.into_parts();
            partial_response(answer, head.headers, length, Source { body, at: 0 }, drain)
        }
    }
}

/// What the request's Range asks of a representation with these fields and length.
fn answer(parts: &Parts, headers: &HeaderMap, length: u64) -> RangeAnswer {
    if !ranges::range_applies(&parts.method, &parts.headers, headers) {
        return RangeAnswer::Whole;
    }
    match ranges::range_specs(&parts.headers) {
        Some(specs) => ranges::answer(&specs, length),
        None => RangeAnswer::Whole,
    }
}

/// A body holding the representation's bytes from offset `at` on.
struct Source {
    body: ProxyBody,
    at: u64,
}

/// The 206 or 416 for `answer` (never `Whole`), from a representation `length` bytes long.
fn partial_response(
    answer: RangeAnswer,
    mut headers: HeaderMap,
    length: u64,
    source: Source,
    drain: bool,
) -> Response<ProxyBody> {
    let ranges = match answer {
        RangeAnswer::Partial(ranges) => ranges,
        RangeAnswer::Whole | RangeAnswer::Unsatisfiable => {
            return unsatisfiable(headers, length);
        }
    };
    let (segments, epilogue) = if let [range] = ranges.as_slice() {
        headers.insert(header::CONTENT_RANGE, range.content_range(length));
        (vec![Segment::new(Bytes::new(), *range)], Bytes::new())
    } else {
        multipart(&mut headers, length, &ranges)
    };
    let size = segments
        .iter()
        .map(|s| s.preamble.len() as u64 + s.range.size())
        .sum::<u64>()
        + epilogue.len() as u64;
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    let body = RangedBody {
        inner: source.body,
        at: source.at,
        pending: None,
        segments: segments.into(),
        epilogue,
        left: size,
        drain,
    };
    let mut response = Response::new(body.boxed_unsync());
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    *response.headers_mut() = headers;
    response
}

/// RFC 9110 §15.5.17: "When this status code is generated in response to a byte-range
/// request, the sender SHOULD generate a Content-Range header field specifying the current
/// length of the selected representation".
fn unsatisfiable(mut headers: HeaderMap, length: u64) -> Response<ProxyBody> {
    for name in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
        headers.remove(name);
    }
    let complete = HeaderValue::from_str(&format!("bytes */{length}")).expect("digits");
    headers.insert(header::CONTENT_RANGE, complete);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    let mut response = Response::new(empty_body());
    *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    *response.headers_mut() = headers;
    response
}

/// RFC 9110 §14.6: each body part carries "a Content-Range field corresponding to the range
/// being enclosed" and the representation's Content-Type; the response's own Content-Type
/// is `multipart/byteranges` with the boundary.
fn multipart(headers: &mut HeaderMap, length: u64, ranges: &[ByteRange]) -> (Vec<Segment>, Bytes) {
    static BOUNDARIES: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let seed = format!("{nanos}-{}", BOUNDARIES.fetch_add(1, Relaxed));
    let boundary = format!(
        "canopy-{:016x}",
        xxhash_rust::xxh3::xxh3_64(seed.as_bytes())
    );
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| format!("Content-Type: {value}\r\n"))
        .unwrap_or_default();
    let segments = ranges
        .iter()
        .enumerate()
        .map(|(i, range)| {
            let before = if i == 0 { "" } else { "\r\n" };
            let preamble = format!(
                "{before}--{boundary}\r\n{content_type}Content-Range: bytes {}-{}/{length}\r\n\r\n",
                range.first, range.last
            );
            Segment::new(Bytes::from(preamble), *range)
        })
        .collect();
    let multipart = format!("multipart/byteranges; boundary={boundary}");
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&multipart).expect("ascii"),
    );
    (segments, Bytes::from(format!("\r\n--{boundary}--\r\n")))
}

/// One range of the answer, with the part header sent before it.
struct Segment {
    preamble: Bytes,
    range: ByteRange,
}

impl Segment {
    fn new(preamble: Bytes, range: ByteRange) -> Segment {
        Segment { preamble, range }
    }
}

/// The ranges of a body that holds the representation from offset `at` on: the bytes
/// before, between and after them skipped, the ranges in ascending order.
struct RangedBody {
    inner: ProxyBody,
    /// The offset of the next byte `inner` (or `pending`) gives.
    at: u64,
    /// Bytes read from `inner` and not yet used, from offset `at`.
    pending: Option<Bytes>,
    segments: VecDeque<Segment>,
    epilogue: Bytes,
    left: u64,
    drain: bool,
}

impl RangedBody {
    /// The last range is sent: the rest of the source is read in the background when the
    /// fill it comes from is to be stored, otherwise dropped.
    fn finish(&mut self) {
        if std::mem::take(&mut self.drain) {
            let mut rest = std::mem::replace(&mut self.inner, empty_body());
            tokio::spawn(async move { while let Some(Ok(_)) = rest.frame().await {} });
        }
    }
}

impl Body for RangedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(segment) = this.segments.front_mut() else {
                if !this.epilogue.is_empty() {
                    let epilogue = std::mem::take(&mut this.epilogue);
                    this.left -= epilogue.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(epilogue))));
                }
                this.finish();
                return Poll::Ready(None);
            };
            if !segment.preamble.is_empty() {
                let preamble = std::mem::take(&mut segment.preamble);
                this.left -= preamble.len() as u64;
                return Poll::Ready(Some(Ok(Frame::data(preamble))));
            }
            let range = segment.range;
            let chunk = match this.pending.take() {
                Some(chunk) => chunk,
                None => match Pin::new(&mut this.inner).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => data,
                        Err(_) => continue,
                    },
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(None) => {
                        return Poll::Ready(Some(Err(BoxError::from(format!(
                            "the body ended at byte {} before the range {}-{} was sent",
                            this.at, range.first, range.last
                        )))));
                    }
                },
            };
            let end = this.at + chunk.len() as u64;
            if end <= range.first {
                this.at = end;
                continue;
            }
            let from = range.first.saturating_sub(this.at) as usize;
            let to = chunk.len().min((range.last + 1 - this.at) as usize);
            if to < chunk.len() {
                this.pending = Some(chunk.slice(to..));
            }
            let data = chunk.slice(from..to);
            this.at += to as u64;
            if this.at > range.last {
                this.segments.pop_front();
            }
            if data.is_empty() {
                continue;
            }
            this.left -= data.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0 && self.segments.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// A range request answered from held partial content of the variant it selects, when it
/// is fresh, If-Range holds and one held piece covers every range asked for (RFC 9111 §3.3:
/// "the request is partial and specifies a range wholly within the incomplete response").
pub(super) fn from_partial(req: &CacheRequest<'_>) -> Option<Served> {
    let parts = req.parts;
    let held = req.shared.partials.lookup(req.key, &parts.headers)?;
    // RFC 9111 §3.5, as for a complete response: only content that says it is shared
    // answers a request with credentials.
    if req.asks.authorization && !policy::answers_credentials(&held.headers, &req.runtime.targets) {
        return None;
    }
    let view = policy::StoredResponse {
        status: StatusCode::OK,
        headers: &held.headers,
        times: held.times,
    };
    let now = SystemTime::now();
    let age = match policy::evaluate(
        &Method::GET,
        &parts.headers,
        &view,
        now,
        &req.runtime.heuristics,
        &req.runtime.targets,
    ) {
        Reuse::Fresh { age } | Reuse::Stale { age } => age,
        _ => return None,
    };
    let answer = match answer(parts, &held.headers, held.length) {
        RangeAnswer::Whole => return None,
        answer => answer,
    };
    let mut headers = held.headers.clone();
    headers.insert(header::AGE, policy::age_header(age));
    let source = match &answer {
        RangeAnswer::Partial(ranges) => {
            let first = ranges.first()?.first;
            let last = ranges.last()?.last;
            let bytes = held.bytes(ByteRange { first, last })?;
            Source {
                body: full_body(bytes),
                at: first,
            }
        }
        _ => Source {
            body: empty_body(),
            at: 0,
        },
    };
    let response = partial_response(answer, headers, held.length, source, false);
    Some(Served {
        response,
        result: LogCode::Hit,
        hierarchy: Hierarchy::NONE,
        answered_here: false,
        hop: None,
    })
}

/// How a range miss is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RangeMiss {
    /// The whole object, as any miss, and the ranges cut from it.
    Whole,
    /// The ranges as asked, with If-Range; a 206 is kept as partial content.
    AsAsked,
}

/// Squid's `range_offset_limit`: a range that starts within the limit is fetched whole, for
/// the cache to store the object, at the price of the bytes before the range; one starting
/// further in (or a suffix, whose start is unknown until the length is) is passed upstream.
pub(super) fn range_miss(parts: &Parts, limit: u64) -> RangeMiss {
    // A Range field this cache ignores: fetched whole, served whole.
    let Some(specs) = ranges::range_specs(&parts.headers) else {
        return RangeMiss::Whole;
    };
    match ranges::first_offset(&specs) {
        Some(offset) if limit > 0 && offset <= limit => RangeMiss::Whole,
        _ => RangeMiss::AsAsked,
    }
}

/// A range miss passed upstream as asked (with the client's If-Range, so that the origin
/// decides between its 206 and a whole 200). A 206 is kept as partial content; anything
/// else is served (and stored) as a miss is.
pub(super) async fn fetch_as_asked(req: &CacheRequest<'_>) -> Served {
    let (runtime, parts) = (req.runtime, req.parts);
    let mut headers = unconditional(&parts.headers);
    for name in [header::RANGE, header::IF_RANGE] {
        for value in parts.headers.get_all(&name) {
            headers.append(&name, value.clone());
        }
    }
    let request_time = SystemTime::now();
    match hierarchy::fetch(runtime, parts, headers, None).await {
        Ok(fetched) if fetched.response.status() == StatusCode::PARTIAL_CONTENT => {
            let (mut head, body) = fetched.response.into_parts();
            remove_hop_by_hop(&mut head.headers);
            if fetched.may_store {
                refresh_from_partial(req, &head.headers, request_time).await;
            }
            let body = body.map_err(BoxError::from).boxed_unsync();
            let body = match keeper(req, fetched.may_store, &head.headers, request_time) {
                Some(keep) => keep.around(body),
                None => body,
            };
            let response = Response::from_parts(head, body);
            Served::fetched(response, LogCode::Miss, fetched.hierarchy, fetched.route)
        }
        Ok(fetched) => store_and_serve(req, fetched, request_time, None, LogCode::Miss),
        Err((error, hierarchy)) => Served::failed(error, runtime, hierarchy),
    }
}

/// What keeps a 206's content as it streams to the client.
struct Keeper {
    shared: std::sync::Arc<crate::runtime::Shared>,
    runtime: std::sync::Arc<crate::runtime::Runtime>,
    key: String,
    vary: Variant,
    headers: HeaderMap,
    request_time: SystemTime,
    range: ByteRange,
    length: u64,
}

/// A keeper for a 206 that may be kept: storable, of one byte range of known complete
/// length, with a strong validator, and no larger than `max_object_size`. It is kept as
/// the variant the request selects, by the fields its Vary names.
fn keeper(
    req: &CacheRequest<'_>,
    may_store: bool,
    response: &HeaderMap,
    request_time: SystemTime,
) -> Option<Keeper> {
    let status = StatusCode::PARTIAL_CONTENT;
    if !may_store
        || !ranges::partial_storable(&req.parts.headers, status, response, &req.runtime.targets)
    {
        return None;
    }
    let (range, length) = ranges::content_range(response)?;
    if length > req.runtime.config.max_object_size.0 {
        return None;
    }
    let vary = policy::vary_request_values(response, &req.parts.headers)
        .filter(|_| response.contains_key(header::VARY));
    let mut headers = response.clone();
    for name in policy::fields_to_strip(response, &req.runtime.targets) {
        headers.remove(name);
    }
    Some(Keeper {
        shared: req.shared.clone(),
        runtime: req.runtime.clone(),
        key: req.key.to_owned(),
        vary,
        headers,
        request_time,
        range,
        length,
    })
}

impl Keeper {
    /// The body, passed on as it arrives; kept as its last byte arrives, before the client
    /// has it, so that the client's next request finds it.
    fn around(self, body: ProxyBody) -> ProxyBody {
        let state = (body, Vec::<Bytes>::new(), 0u64, Some(self));
        let chunks = futures_util::stream::unfold(
            state,
            |(mut body, mut kept, mut got, mut keeper)| async move {
                loop {
                    let data = match body.frame().await? {
                        Ok(frame) => match frame.into_data() {
                            Ok(data) => data,
                            Err(_) => continue,
                        },
                        Err(e) => return Some((Err(e), (body, Vec::new(), got, None))),
                    };
                    got += data.len() as u64;
                    let wanted = keeper.as_ref().map_or(0, |k| k.range.size());
                    if got <= wanted {
                        kept.push(data.clone());
                    }
                    if got >= wanted {
                        if let Some(keeper) = keeper.take().filter(|_| got == wanted) {
                            keeper.keep(std::mem::take(&mut kept));
                        }
                    }
                    return Some((Ok(Frame::data(data)), (body, kept, got, keeper)));
                }
            },
        );
        http_body_util::StreamBody::new(chunks).boxed_unsync()
    }

    /// Adds the range to the partial content held; once the ranges make the whole, the
    /// object goes to the store as a 200 of its variant, in memory when it fits there and
    /// on disk when there is a disk tier, as a fill would (RFC 9110 §15.3.7.3: "If the union
    /// consists of the entire range of the representation, then the client MUST process the
    /// combined response as if it were a complete 200 (OK) response").
    fn keep(self, chunks: Vec<Bytes>) {
        let body = match chunks.as_slice() {
            [one] => one.clone(),
            _ => Bytes::from(chunks.concat()),
        };
        let piece = Piece {
            key: &self.key,
            vary: self.vary,
            headers: &self.headers,
            times: StoredTimes {
                request_time: self.request_time,
                response_time: SystemTime::now(),
            },
            range: self.range,
            length: self.length,
            bytes: body,
        };
        let Added::Complete {
            headers,
            times,
            vary,
            body,
        } = self.shared.partials.add(piece, &self.runtime.targets)
        else {
            return;
        };
        let config = &self.runtime.config;
        let in_memory = match self.shared.disk.as_ref() {
            Some(_) => config.max_object_size_in_memory.0,
            None => config.max_object_size.0,
        };
        if config.cache_mem.0 > 0 && body.len() as u64 <= in_memory {
            let stored = Stored::new(
                StatusCode::OK,
                headers.clone(),
                body.clone(),
                times,
                vary.clone(),
                &self.runtime.targets,
            );
            self.shared.store.load().insert(&self.key, stored);
        }
        let Some(fill) = self.shared.disk.as_ref().and_then(|disk| {
            let head = ObjectHead {
                status: StatusCode::OK,
                headers,
                times,
                vary,
            };
            disk.fill(&self.key, head)
        }) else {
            return;
        };
        tokio::spawn(async move {
            if fill.write(body).await {
                fill.commit().await;
            }
        });
    }
}

#[cfg(test)]
mod tests;
