//! Freshness policy of Canopy's shared cache: what may be stored, how long it stays fresh, and when it must be revalidated (RFC 9111, RFC 5861, RFC 9110 §13).
//!
//! Every function is a pure function of header maps and explicit times, so each
//! rule can be tested on its own. Where the RFCs leave a choice, the choice is
//! documented on the item that makes it. No function panics on any header bytes.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

/// Delta-seconds above this, and overflowing sums, are taken as this value (RFC 9111 §1.2.2).
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// Cache-Control directives of one message (RFC 9111 §5.2, RFC 5861, RFC 8246).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub max_age: Option<Duration>,
    pub s_maxage: Option<Duration>,
    pub no_store: bool,
    /// Unqualified `no-cache`: the whole response needs revalidation before each reuse.
    pub no_cache: bool,
    /// Fields named by `no-cache="..."`: they must not be reused without revalidation.
    pub no_cache_fields: Vec<HeaderName>,
    /// Unqualified `private`: a shared cache must not store the response.
    pub private: bool,
    /// Fields named by `private="..."`: a shared cache must not store them.
    pub private_fields: Vec<HeaderName>,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub only_if_cached: bool,
    /// `Some(None)` for a bare `max-stale`: any staleness is acceptable.
    pub max_stale: Option<Option<Duration>>,
    pub min_fresh: Option<Duration>,
    pub stale_while_revalidate: Option<Duration>,
    pub stale_if_error: Option<Duration>,
    pub immutable: bool,
}

impl CacheControl {
    /// Parses all Cache-Control fields of a message as one list; directive names are
    /// case-insensitive and arguments may be tokens or quoted strings.
    ///
    /// Choices where RFC 9111 leaves one open:
    /// - a repeated directive keeps its first occurrence (§4.2.1);
    /// - an invalid or missing `max-age` or `s-maxage` argument counts as 0, so the response is
    ///   stale (§4.2.1 encourages this);
    /// - any other directive with an invalid delta-seconds is ignored as if absent, so a later
    ///   valid occurrence counts;
    /// - a `no-cache` or `private` argument that names no valid field counts as unqualified,
    ///   erring on not reusing;
    /// - when both the unqualified and qualified forms appear, the unqualified, more restrictive
    ///   one governs.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            for (name, arg) in directives(value.as_bytes()) {
                cc.apply(&name, arg.as_deref());
            }
        }
        cc
    }

    /// Like [`CacheControl::parse`] for a request, where `Pragma: no-cache` counts as `no-cache`
    /// when no Cache-Control field is present (RFC 9111 §5.4).
    pub fn parse_request(headers: &HeaderMap) -> Self {
        let mut cc = Self::parse(headers);
        if !headers.contains_key(header::CACHE_CONTROL) {
            cc.no_cache |= headers
                .get_all(header::PRAGMA)
                .iter()
                .flat_map(|value| directives(value.as_bytes()))
                .any(|(name, _)| name == "no-cache");
        }
        cc
    }

    fn apply(&mut self, name: &str, arg: Option<&str>) {
        let delta = arg.and_then(|arg| delta_seconds(arg.as_bytes()));
        match name {
            "max-age" => {
                self.max_age.get_or_insert(delta.unwrap_or(Duration::ZERO));
            }
            "s-maxage" => {
                self.s_maxage.get_or_insert(delta.unwrap_or(Duration::ZERO));
            }
            "max-stale" if self.max_stale.is_none() => {
                self.max_stale = if arg.is_none() {
                    Some(None)
                } else {
                    delta.map(Some)
                };
            }
            "min-fresh" => keep_first(&mut self.min_fresh, delta),
            "stale-while-revalidate" => keep_first(&mut self.stale_while_revalidate, delta),
            "stale-if-error" => keep_first(&mut self.stale_if_error, delta),
            "no-cache" => qualify(arg, &mut self.no_cache, &mut self.no_cache_fields),
            "private" => qualify(arg, &mut self.private, &mut self.private_fields),
            "no-store" => self.no_store = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "must-understand" => self.must_understand = true,
            "only-if-cached" => self.only_if_cached = true,
            "immutable" => self.immutable = true,
            _ => {}
        }
    }

    /// A shared cache may not serve this response stale (RFC 9111 §4.2.4); `s-maxage` implies
    /// `proxy-revalidate` (§5.2.2.10).
    fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some()
    }
}

fn keep_first(slot: &mut Option<Duration>, value: Option<Duration>) {
    if slot.is_none() {
        *slot = value;
    }
}

fn qualify(arg: Option<&str>, whole: &mut bool, fields: &mut Vec<HeaderName>) {
    let names: Vec<HeaderName> = arg
        .into_iter()
        .flat_map(|arg| arg.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    if names.is_empty() {
        *whole = true;
    }
    for name in names {
        if !fields.contains(&name) {
            fields.push(name);
        }
    }
}

/// Splits a directive list into lowercased names and unquoted arguments. Commas inside
/// quoted strings do not split; junk after a directive, up to the next comma, is skipped.
fn directives(value: &[u8]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < value.len() {
        while i < value.len() && matches!(value[i], b',' | b' ' | b'\t') {
            i += 1;
        }
        let start = i;
        while i < value.len() && !matches!(value[i], b',' | b'=' | b' ' | b'\t') {
            i += 1;
        }
        let name = String::from_utf8_lossy(&value[start..i]).to_ascii_lowercase();
        while i < value.len() && matches!(value[i], b' ' | b'\t') {
            i += 1;
        }
        let mut arg = None;
        if i < value.len() && value[i] == b'=' {
            i += 1;
            while i < value.len() && matches!(value[i], b' ' | b'\t') {
                i += 1;
            }
            if i < value.len() && value[i] == b'"' {
                i += 1;
                let mut text = Vec::new();
                while i < value.len() {
                    match value[i] {
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\\' if i + 1 < value.len() => {
                            text.push(value[i + 1]);
                            i += 2;
                        }
                        byte => {
                            text.push(byte);
                            i += 1;
                        }
                    }
                }
                arg = Some(String::from_utf8_lossy(&text).into_owned());
            } else {
                let start = i;
                while i < value.len() && !matches!(value[i], b',' | b' ' | b'\t') {
                    i += 1;
                }
                arg = Some(String::from_utf8_lossy(&value[start..i]).into_owned());
            }
        }
        while i < value.len() && value[i] != b',' {
            i += 1;
        }
        if !name.is_empty() {
            out.push((name, arg));
        }
    }
    out
}

/// Parses delta-seconds (RFC 9111 §1.2.2): digits only, capped at 2^31.
fn delta_seconds(text: &[u8]) -> Option<Duration> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs = text.iter().fold(0u64, |secs, digit| {
        (secs * 10 + u64::from(digit - b'0')).min(MAX_DELTA_SECONDS)
    });
    Some(Duration::from_secs(secs))
}

/// Non-empty, trimmed members of all field lines of a comma-separated list field.
fn list_members(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|member| !member.is_empty())
}

/// The first field line of a date field, if it is an HTTP-date in any of its three forms
/// (IMF-fixdate, RFC 850, asctime; RFC 9110 §5.6.7).
fn date(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    let text = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(text.trim()).ok()
}

fn elapsed(from: SystemTime, to: SystemTime) -> Duration {
    to.duration_since(from).unwrap_or(Duration::ZERO)
}

/// When a stored response was requested and received, by this cache's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredTimes {
    pub request_time: SystemTime,
    pub response_time: SystemTime,
}

/// Heuristic freshness (RFC 9111 §4.2.2): `lm_factor × (Date − Last-Modified)`, clamped to `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heuristics {
    pub lm_factor: f64,
    pub min: Duration,
    pub max: Duration,
}

impl Default for Heuristics {
    fn default() -> Self {
        Self {
            lm_factor: 0.1,
            min: Duration::ZERO,
            max: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl Heuristics {
    /// Without a valid Last-Modified the lifetime is `min`. A `max` below `min` wins, and a
    /// negative or NaN factor gives 0, so odd settings never panic.
    fn lifetime(&self, resp: &HeaderMap, times: &StoredTimes) -> Duration {
        let date_value = date(resp, header::DATE).unwrap_or(times.response_time);
        let since_modified =
            date(resp, header::LAST_MODIFIED).map_or(Duration::ZERO, |lm| elapsed(lm, date_value));
        let secs = since_modified.as_secs_f64() * self.lm_factor;
        let scaled = if secs.is_nan() || secs <= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
        };
        scaled.max(self.min).min(self.max)
    }
}

/// Status codes that are heuristically cacheable (RFC 9110 §15.1).
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Status codes whose caching rules this cache implements, for `must-understand`
/// (RFC 9111 §5.2.2.3): the final codes of RFC 9110 except 206 and 304, never stored here.
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=303 | 305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// Whether a shared cache may store this response to this request (RFC 9111 §3).
///
/// Only GET is stored; HEAD is answered from a stored GET by the caller. 206 and 304 are
/// never stored. `no-cache` does not prevent storing. A response with `Vary: *` is not stored,
/// because it could never be reused (§4.1). With `must-understand`, `no-store` is ignored
/// for an understood status and the response is refused for any other (§5.2.2.3).
pub fn is_storable(method: &Method, req: &HeaderMap, status: StatusCode, resp: &HeaderMap) -> bool {
    let code = status.as_u16();
    if method != Method::GET || !(200..600).contains(&code) || code == 206 || code == 304 {
        return false;
    }
    // The response's refusals first: an uncacheable response then costs no more parsing.
    let response = CacheControl::parse(resp);
    let refused_by_directive = if response.must_understand {
        !understood(status)
    } else {
        response.no_store
    };
    if refused_by_directive || response.private || vary_names(resp).is_none() {
        return false;
    }
    if CacheControl::parse(req).no_store {
        return false;
    }
    let shareable = response.public || response.must_revalidate || response.s_maxage.is_some();
    if req.contains_key(header::AUTHORIZATION) && !shareable {
        return false;
    }
    response.public
        || response.max_age.is_some()
        || response.s_maxage.is_some()
        || resp.contains_key(header::EXPIRES)
        || heuristically_cacheable(status)
}

/// Fields the origin meant for the one client whose request it answered: the cookies it sets.
///
/// RFC 9111 §3 lets a shared cache store and reuse a response that carries Set-Cookie.
/// Canopy stores such a response, as Squid does, but never these fields: the client whose
/// request fetched it gets them, no other client ever does (not from the store, not while
/// waiting on the same fetch). Squid removes Set-Cookie from every hit for the same reason;
/// Varnish and nginx do not store such responses at all, which costs the hit for everyone.
pub const FOR_ONE_CLIENT: [HeaderName; 2] =
    [header::SET_COOKIE, HeaderName::from_static("set-cookie2")];

/// Fields to remove before storing: [`FOR_ONE_CLIENT`], those named by `private="..."` (a
/// shared cache must not store them, RFC 9111 §5.2.2.7) and by `no-cache="..."` (they must
/// not be reused without revalidation, §5.2.2.4; not storing them is the simplest way never
/// to reuse them).
pub fn fields_to_strip(resp: &HeaderMap) -> Vec<HeaderName> {
    let cc = CacheControl::parse(resp);
    let mut fields = FOR_ONE_CLIENT.to_vec();
    for name in cc.private_fields.into_iter().chain(cc.no_cache_fields) {
        if !fields.contains(&name) {
            fields.push(name);
        }
    }
    fields
}

/// Freshness lifetime for a shared cache (RFC 9111 §4.2.1): `s-maxage`, else `max-age`, else
/// `Expires − Date`, else a heuristic, else 0.
///
/// Only the first Expires field counts; an invalid Expires means already expired (§5.3) and
/// rules out heuristics. Without a valid Date, `response_time` stands in for it (RFC 9110
/// §6.6.1). Heuristics apply to heuristically cacheable statuses and to `public` responses (§4.2.2).
pub fn freshness_lifetime(
    status: StatusCode,
    resp: &HeaderMap,
    times: &StoredTimes,
    heuristics: &Heuristics,
) -> Duration {
    let cc = CacheControl::parse(resp);
    if let Some(lifetime) = cc.s_maxage.or(cc.max_age) {
        return lifetime;
    }
    if resp.contains_key(header::EXPIRES) {
        let date_value = date(resp, header::DATE).unwrap_or(times.response_time);
        return date(resp, header::EXPIRES)
            .map_or(Duration::ZERO, |expires| elapsed(date_value, expires));
    }
    if heuristically_cacheable(status) || cc.public {
        heuristics.lifetime(resp, times)
    } else {
        Duration::ZERO
    }
}

/// `age_value` (RFC 9111 §5.1): the first member of a list-valued Age; an invalid one is ignored.
fn age_value(resp: &HeaderMap) -> Duration {
    list_members(resp, header::AGE)
        .next()
        .and_then(delta_seconds)
        .unwrap_or(Duration::ZERO)
}

/// Current age of a stored response, exactly as RFC 9111 §4.2.3 computes it.
pub fn current_age(resp: &HeaderMap, times: &StoredTimes, now: SystemTime) -> Duration {
    let date_value = date(resp, header::DATE).unwrap_or(times.response_time);
    let apparent_age = elapsed(date_value, times.response_time);
    let response_delay = elapsed(times.request_time, times.response_time);
    let corrected_age_value = age_value(resp).saturating_add(response_delay);
    let corrected_initial_age = apparent_age.max(corrected_age_value);
    let resident_time = elapsed(times.response_time, now);
    corrected_initial_age.saturating_add(resident_time)
}

/// How long the stored response stays fresh from `now`; 0 when stale. The ICP server answers
/// HIT only when this is at least 30 s.
pub fn remaining_freshness(
    status: StatusCode,
    resp: &HeaderMap,
    times: &StoredTimes,
    now: SystemTime,
    heuristics: &Heuristics,
) -> Duration {
    freshness_lifetime(status, resp, times, heuristics)
        .saturating_sub(current_age(resp, times, now))
}

/// How a stored response may answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Serve it as is.
    Fresh { age: Duration },
    /// Serve it although stale, as the request's `max-stale` allows.
    Stale { age: Duration },
    /// Serve it stale now and revalidate in the background (RFC 5861 §3).
    StaleWhileRevalidate { age: Duration },
    /// Send a conditional request before using it.
    Revalidate { age: Duration },
    /// It cannot answer this method; forward the request.
    Miss,
}

impl Reuse {
    /// Current age of the stored response, for the Age field; `None` for a miss.
    pub fn age(&self) -> Option<Duration> {
        match *self {
            Reuse::Fresh { age }
            | Reuse::Stale { age }
            | Reuse::StaleWhileRevalidate { age }
            | Reuse::Revalidate { age } => Some(age),
            Reuse::Miss => None,
        }
    }
}

/// Decides whether a stored GET response may answer a request (RFC 9111 §4.2, §5.2.1, RFC 5861 §3).
///
/// The caller has already matched the cache key and Vary ([`vary_matches`]); a request with
/// `only-if-cached` that gets `Revalidate` is answered 504 by the caller (§5.2.1.7).
/// Choices: when the response is within its `stale-while-revalidate` window and the request's
/// `max-stale` also allows it, background revalidation is preferred; conflicting request
/// directives (`min-fresh` with `max-stale`) resolve to the more restrictive. `immutable` is
/// not used here: RFC 8246 addresses user agents.
pub fn evaluate(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    stored: &HeaderMap,
    times: &StoredTimes,
    now: SystemTime,
    heuristics: &Heuristics,
) -> Reuse {
    if method != Method::GET && method != Method::HEAD {
        return Reuse::Miss;
    }
    let request = CacheControl::parse_request(req);
    let response = CacheControl::parse(stored);
    let age = current_age(stored, times, now);
    let lifetime = freshness_lifetime(status, stored, times, heuristics);
    let too_old = request.max_age.is_some_and(|max| age > max);
    let too_close = request
        .min_fresh
        .is_some_and(|min| lifetime < age.saturating_add(min));
    if response.no_cache || request.no_cache || too_old || too_close {
        return Reuse::Revalidate { age };
    }
    if lifetime > age {
        return Reuse::Fresh { age };
    }
    if response.forbids_stale() {
        return Reuse::Revalidate { age };
    }
    let staleness = age.saturating_sub(lifetime);
    if response
        .stale_while_revalidate
        .is_some_and(|window| staleness <= window)
    {
        return Reuse::StaleWhileRevalidate { age };
    }
    match request.max_stale {
        Some(None) => Reuse::Stale { age },
        Some(Some(max)) if staleness <= max => Reuse::Stale { age },
        _ => Reuse::Revalidate { age },
    }
}

/// Whether the stored response may answer when the origin cannot be reached or answers
/// 500, 502, 503 or 504 (RFC 5861 §4, RFC 9111 §4.2.4, §4.3.3).
///
/// A fresh response may, unless it carries `no-cache`. A stale one may within the larger of
/// the response's and the request's `stale-if-error` windows (either party may permit it),
/// never when `must-revalidate`, `proxy-revalidate` or `s-maxage` forbid stale responses.
pub fn may_serve_stale_on_error(
    req: &HeaderMap,
    status: StatusCode,
    stored: &HeaderMap,
    times: &StoredTimes,
    now: SystemTime,
    heuristics: &Heuristics,
) -> bool {
    let response = CacheControl::parse(stored);
    if response.no_cache {
        return false;
    }
    let age = current_age(stored, times, now);
    let lifetime = freshness_lifetime(status, stored, times, heuristics);
    if lifetime > age {
        return true;
    }
    if response.forbids_stale() {
        return false;
    }
    let request = CacheControl::parse_request(req);
    let window = response.stale_if_error.max(request.stale_if_error);
    window.is_some_and(|window| age.saturating_sub(lifetime) <= window)
}

/// An entity-tag (RFC 9110 §8.8.3): its weakness and its opaque-tag without quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    opaque: &'a [u8],
}

impl EntityTag<'_> {
    /// Strong comparison (RFC 9110 §8.8.3.2).
    fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison (RFC 9110 §8.8.3.2).
    fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }
}

/// Parses a list of entity-tags; `None` if any member is malformed. Commas may occur inside tags.
fn entity_tags(value: &[u8]) -> Option<Vec<EntityTag<'_>>> {
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_ascii_start();
        while let Some(after) = rest.strip_prefix(b",") {
            rest = after.trim_ascii_start();
        }
        if rest.is_empty() {
            return Some(tags);
        }
        let (weak, tag) = match rest.strip_prefix(b"W/") {
            Some(tag) => (true, tag),
            None => (false, rest),
        };
        let tag = tag.strip_prefix(b"\"")?;
        let end = tag.iter().position(|&byte| byte == b'"')?;
        let (opaque, after) = tag.split_at(end);
        if !opaque
            .iter()
            .all(|&byte| byte == 0x21 || (0x23..=0x7e).contains(&byte) || byte >= 0x80)
        {
            return None;
        }
        tags.push(EntityTag { weak, opaque });
        rest = after.get(1..).unwrap_or_default().trim_ascii_start();
        if !rest.is_empty() && !rest.starts_with(b",") {
            return None;
        }
    }
}

/// The ETag of a response, if its first field line is exactly one valid entity-tag.
fn etag(headers: &HeaderMap) -> Option<EntityTag<'_>> {
    match entity_tags(headers.get(header::ETAG)?.as_bytes())?.as_slice() {
        [tag] => Some(*tag),
        _ => None,
    }
}

/// Precondition fields for revalidating a stored response (RFC 9111 §4.3.1): If-None-Match
/// from a valid ETag, If-Modified-Since from a valid Last-Modified, re-sent as IMF-fixdate.
/// Empty when the response has no usable validator.
pub fn conditional_request_headers(stored: &HeaderMap) -> HeaderMap {
    let mut conditions = HeaderMap::new();
    if let (Some(value), Some(_)) = (stored.get(header::ETAG), etag(stored)) {
        conditions.insert(header::IF_NONE_MATCH, value.clone());
    }
    let since = date(stored, header::LAST_MODIFIED)
        .and_then(|modified| HeaderValue::from_str(&httpdate::fmt_http_date(modified)).ok());
    if let Some(value) = since {
        conditions.insert(header::IF_MODIFIED_SINCE, value);
    }
    conditions
}

/// Whether a 304 applies to this stored response (RFC 9111 §4.3.4).
///
/// A strong ETag selects a stored response with the same strong ETag; a weak ETag selects by
/// weak comparison; without an ETag, Last-Modified must equal the stored one. A 304 with no
/// validator at all selects the stored response only if that has none either: otherwise the
/// 304 may answer a client's own conditional that says nothing about this stored response.
pub fn not_modified_matches(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    if not_modified.contains_key(header::ETAG) {
        return match (etag(not_modified), etag(stored)) {
            (Some(new), Some(old)) if new.weak => new.weak_eq(&old),
            (Some(new), Some(old)) => new.strong_eq(&old),
            _ => false,
        };
    }
    if not_modified.contains_key(header::LAST_MODIFIED) {
        let new = date(not_modified, header::LAST_MODIFIED);
        return new.is_some() && new == date(stored, header::LAST_MODIFIED);
    }
    !stored.contains_key(header::ETAG) && !stored.contains_key(header::LAST_MODIFIED)
}

/// Fields a 304 never replaces (RFC 9111 §3.1, §3.2): hop-by-hop and proxy-specific fields,
/// Content-Length, and the fields the stored body depends on (Content-Encoding, Content-Range).
fn kept_on_update(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authentication-info"
            | "proxy-authorization"
            | "content-length"
            | "content-encoding"
            | "content-range"
    )
}

/// Stored fields updated from a matching 304 (RFC 9111 §3.2, §4.3.4): each field in the 304
/// replaces all stored lines of that name, except hop-by-hop and proxy-specific fields (and
/// those the 304's Connection names), Content-Length, Content-Encoding and Content-Range.
///
/// The stored Date and Age describe the old response, so they are dropped when the 304 lacks
/// them; the caller then sets [`StoredTimes`] to the revalidation's times, and adds Date when
/// forwarding (RFC 9110 §6.6.1). Fields the merged Cache-Control names in `private="..."` or
/// `no-cache="..."` are removed, as on storing. If Vary changed, the caller recomputes
/// [`vary_request_values`].
pub fn merge_not_modified(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let connection_listed: Vec<HeaderName> = list_members(not_modified, header::CONNECTION)
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .collect();
    let mut merged = stored.clone();
    for name in not_modified.keys() {
        if kept_on_update(name) || connection_listed.contains(name) {
            continue;
        }
        merged.remove(name);
        for value in not_modified.get_all(name) {
            merged.append(name.clone(), value.clone());
        }
    }
    for name in [header::DATE, header::AGE] {
        if !not_modified.contains_key(&name) {
            merged.remove(&name);
        }
    }
    for name in fields_to_strip(&merged) {
        merged.remove(&name);
    }
    merged
}

/// Whether a GET or HEAD answered from the cache gets 304 (RFC 9110 §13.1.2, §13.1.3, §13.2.2).
///
/// If-None-Match, when present, decides alone: `*` or a weakly matching tag means not
/// modified; a malformed list means modified. Otherwise a single valid If-Modified-Since is
/// compared with Last-Modified, or Date when Last-Modified is absent or invalid (RFC 9111
/// §4.3.2). Invalid or repeated dates are ignored.
pub fn client_not_modified(req: &HeaderMap, stored: &HeaderMap) -> bool {
    if req.contains_key(header::IF_NONE_MATCH) {
        let lines = req.get_all(header::IF_NONE_MATCH);
        if lines
            .iter()
            .any(|line| line.as_bytes().trim_ascii() == b"*")
        {
            return true;
        }
        let Some(current) = etag(stored) else {
            return false;
        };
        let mut tags = Vec::new();
        for line in lines {
            match entity_tags(line.as_bytes()) {
                Some(line_tags) => tags.extend(line_tags),
                None => return false,
            }
        }
        return tags.iter().any(|tag| tag.weak_eq(&current));
    }
    let mut lines = req.get_all(header::IF_MODIFIED_SINCE).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return false;
    };
    let Some(since) = line
        .to_str()
        .ok()
        .and_then(|text| httpdate::parse_http_date(text.trim()).ok())
    else {
        return false;
    };
    date(stored, header::LAST_MODIFIED)
        .or_else(|| date(stored, header::DATE))
        .is_some_and(|modified| modified <= since)
}

/// The field names in all Vary fields, lowercased and deduplicated; `None` for `Vary: *`.
fn vary_names(resp: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for member in list_members(resp, header::VARY) {
        if member == b"*" {
            return None;
        }
        let name = HeaderName::from_bytes(member).ok();
        if let Some(name) = name.filter(|name| !names.contains(name)) {
            names.push(name);
        }
    }
    Some(names)
}

/// A request's value for one field, normalized for Vary matching (RFC 9111 §4.1): field lines
/// trimmed and joined by ", ". Bytes outside visible ASCII and space, and `%`, are
/// percent-encoded so that distinct values never compare equal.
fn request_value(req: &HeaderMap, name: &HeaderName) -> Option<String> {
    let lines: Vec<&[u8]> = req
        .get_all(name)
        .iter()
        .map(|value| value.as_bytes().trim_ascii())
        .collect();
    if lines.is_empty() {
        return None;
    }
    let mut text = String::new();
    for byte in lines.join(&b", "[..]) {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            text.push(char::from(byte));
        } else {
            text.push_str(&format!("%{byte:02X}"));
        }
    }
    Some(text)
}

/// The secondary cache key of a response: each field its Vary names, with the request's
/// normalized value (`None` when absent). `None` for `Vary: *`, which never matches.
pub fn vary_request_values(
    resp: &HeaderMap,
    req: &HeaderMap,
) -> Option<Vec<(HeaderName, Option<String>)>> {
    let names = vary_names(resp)?;
    Some(
        names
            .into_iter()
            .map(|name| {
                let value = request_value(req, &name);
                (name, value)
            })
            .collect(),
    )
}

/// Whether a request selects a stored response with this secondary key (RFC 9111 §4.1).
pub fn vary_matches(stored: &[(HeaderName, Option<String>)], req: &HeaderMap) -> bool {
    stored
        .iter()
        .all(|(name, value)| request_value(req, name) == *value)
}

/// Whether this response invalidates the stored responses of its target URI (RFC 9111 §4.4):
/// an unsafe method, including unknown ones, answered with 2xx or 3xx. The caller also
/// invalidates the same-origin Location and Content-Location URIs.
pub fn invalidates(method: &Method, status: StatusCode) -> bool {
    let safe = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE].contains(method);
    !safe && (status.is_success() || status.is_redirection())
}

/// The Age field for a served response: whole seconds, capped at 2^31 (RFC 9111 §1.2.2, §5.1).
pub fn age_header(current_age: Duration) -> HeaderValue {
    HeaderValue::from(current_age.as_secs().min(MAX_DELTA_SECONDS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    /// A fixed instant: Tue, 14 Nov 2023 22:13:20 GMT.
    const T0: u64 = 1_700_000_000;
    /// The RFC examples' instant: Sun, 06 Nov 1994 08:49:37 GMT.
    const RFC_EXAMPLE: u64 = 784_111_777;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn http_date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("test field name"),
                HeaderValue::from_str(value).expect("test field value"),
            );
        }
        map
    }

    /// A response generated, requested and received at T0, with the given fields.
    fn response(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = headers(fields);
        if !map.contains_key(header::DATE) {
            map.insert(
                header::DATE,
                HeaderValue::from_str(&http_date(T0)).expect("date"),
            );
        }
        map
    }

    fn times_at_t0() -> StoredTimes {
        StoredTimes {
            request_time: at(T0),
            response_time: at(T0),
        }
    }

    fn lifetime(status: u16, resp: &HeaderMap) -> Duration {
        let status = StatusCode::from_u16(status).expect("status");
        freshness_lifetime(status, resp, &times_at_t0(), &Heuristics::default())
    }

    fn storable(status: u16, resp: &[(&str, &str)]) -> bool {
        let status = StatusCode::from_u16(status).expect("status");
        is_storable(&Method::GET, &HeaderMap::new(), status, &response(resp))
    }

    /// Evaluates a GET for a 200 stored at T0, `elapsed` seconds later.
    fn reuse(req: &[(&str, &str)], resp: &[(&str, &str)], elapsed: u64) -> Reuse {
        evaluate(
            &Method::GET,
            &headers(req),
            StatusCode::OK,
            &response(resp),
            &times_at_t0(),
            at(T0 + elapsed),
            &Heuristics::default(),
        )
    }

    fn on_error(req: &[(&str, &str)], resp: &[(&str, &str)], elapsed: u64) -> bool {
        may_serve_stale_on_error(
            &headers(req),
            StatusCode::OK,
            &response(resp),
            &times_at_t0(),
            at(T0 + elapsed),
            &Heuristics::default(),
        )
    }

    fn name(text: &'static str) -> HeaderName {
        HeaderName::from_static(text)
    }

    // Cache-Control parsing

    #[test]
    fn cache_control_names_are_case_insensitive() {
        let cc = CacheControl::parse(&headers(&[(
            "cache-control",
            "MAX-AGE=60, No-Store, S-MaxAge=5, Private",
        )]));
        assert_eq!(cc.max_age, Some(secs(60)));
        assert_eq!(cc.s_maxage, Some(secs(5)));
        assert!(cc.no_store);
        assert!(cc.private);
    }

    #[test]
    fn repeated_cache_control_fields_are_combined() {
        let cc = CacheControl::parse(&headers(&[
            ("cache-control", "public"),
            ("cache-control", "max-age=60"),
            ("cache-control", "must-revalidate"),
        ]));
        assert!(cc.public);
        assert_eq!(cc.max_age, Some(secs(60)));
        assert!(cc.must_revalidate);
    }

    #[test]
    fn every_directive_is_parsed() {
        let cc = CacheControl::parse(&headers(&[(
            "cache-control",
            "max-age=1, s-maxage=2, no-store, no-cache, private, public, must-revalidate, \
             proxy-revalidate, must-understand, only-if-cached, max-stale=3, min-fresh=4, \
             stale-while-revalidate=5, stale-if-error=6, immutable, x-unknown=7",
        )]));
        let expected = CacheControl {
            max_age: Some(secs(1)),
            s_maxage: Some(secs(2)),
            no_store: true,
            no_cache: true,
            no_cache_fields: vec![],
            private: true,
            private_fields: vec![],
            public: true,
            must_revalidate: true,
            proxy_revalidate: true,
            must_understand: true,
            only_if_cached: true,
            max_stale: Some(Some(secs(3))),
            min_fresh: Some(secs(4)),
            stale_while_revalidate: Some(secs(5)),
            stale_if_error: Some(secs(6)),
            immutable: true,
        };
        assert_eq!(cc, expected);
    }

    #[test]
    fn quoted_field_names_are_parsed_and_commas_inside_quotes_do_not_split() {
        let cc = CacheControl::parse(&headers(&[(
            "cache-control",
            r#"private="Set-Cookie, X-Foo", no-cache="X-Bar", max-age=5"#,
        )]));
        assert!(!cc.private);
        assert_eq!(cc.private_fields, vec![header::SET_COOKIE, name("x-foo")]);
        assert!(!cc.no_cache);
        assert_eq!(cc.no_cache_fields, vec![name("x-bar")]);
        assert_eq!(cc.max_age, Some(secs(5)));
    }

    #[test]
    fn token_form_field_name_is_accepted() {
        let cc = CacheControl::parse(&headers(&[("cache-control", "private=set-cookie")]));
        assert!(!cc.private);
        assert_eq!(cc.private_fields, vec![header::SET_COOKIE]);
    }

    #[test]
    fn qualified_directive_without_valid_field_counts_as_unqualified() {
        let cc = CacheControl::parse(&headers(&[(
            "cache-control",
            r#"private="", no-cache="bad name""#,
        )]));
        assert!(cc.private);
        assert!(cc.no_cache);
    }

    #[test]
    fn unqualified_form_wins_over_qualified() {
        let cc = CacheControl::parse(&headers(&[(
            "cache-control",
            r#"no-cache="x-a", no-cache"#,
        )]));
        assert!(cc.no_cache);
        assert_eq!(cc.no_cache_fields, vec![name("x-a")]);
    }

    #[test]
    fn invalid_max_age_means_stale() {
        for value in [
            "max-age=abc",
            "max-age=-1",
            "max-age=1.5",
            "max-age",
            "max-age=",
        ] {
            let cc = CacheControl::parse(&headers(&[("cache-control", value)]));
            assert_eq!(cc.max_age, Some(Duration::ZERO), "{value}");
        }
        let cc = CacheControl::parse(&headers(&[("cache-control", "s-maxage=soon")]));
        assert_eq!(cc.s_maxage, Some(Duration::ZERO));
    }

    #[test]
    fn other_invalid_delta_seconds_are_ignored() {
        let cc = CacheControl::parse(&headers(&[(
            "cache-control",
            "min-fresh=x, max-stale=-1, stale-while-revalidate=1.5, stale-if-error",
        )]));
        assert_eq!(cc.min_fresh, None);
        assert_eq!(cc.max_stale, None);
        assert_eq!(cc.stale_while_revalidate, None);
        assert_eq!(cc.stale_if_error, None);
    }

    #[test]
    fn first_occurrence_of_repeated_directive_wins() {
        let cc = CacheControl::parse(&headers(&[
            ("cache-control", "max-age=60, stale-if-error=x"),
            (
                "cache-control",
                "max-age=10, stale-if-error=5, stale-if-error=9",
            ),
        ]));
        assert_eq!(cc.max_age, Some(secs(60)));
        assert_eq!(cc.stale_if_error, Some(secs(5)));
    }

    #[test]
    fn quoted_delta_seconds_are_accepted() {
        let cc = CacheControl::parse(&headers(&[("cache-control", r#"max-age="30""#)]));
        assert_eq!(cc.max_age, Some(secs(30)));
    }

    #[test]
    fn huge_delta_seconds_are_capped_at_2_pow_31() {
        let cc = CacheControl::parse(&headers(&[(
            "cache-control",
            "max-age=99999999999999999999999999",
        )]));
        assert_eq!(cc.max_age, Some(secs(1 << 31)));
    }

    #[test]
    fn bare_max_stale_means_any_staleness() {
        let cc = CacheControl::parse(&headers(&[("cache-control", "max-stale")]));
        assert_eq!(cc.max_stale, Some(None));
    }

    #[test]
    fn pragma_no_cache_counts_only_in_a_request_without_cache_control() {
        let pragma = headers(&[("pragma", "No-Cache")]);
        assert!(CacheControl::parse_request(&pragma).no_cache);
        assert!(!CacheControl::parse(&pragma).no_cache);
        let both = headers(&[("pragma", "no-cache"), ("cache-control", "max-age=5")]);
        assert!(!CacheControl::parse_request(&both).no_cache);
    }

    // Age

    #[test]
    fn list_valued_age_uses_first_member() {
        let times = times_at_t0();
        let one_line = response(&[("age", "5, 100")]);
        assert_eq!(current_age(&one_line, &times, at(T0)), secs(5));
        let two_lines = response(&[("age", "7"), ("age", "100")]);
        assert_eq!(current_age(&two_lines, &times, at(T0)), secs(7));
    }

    #[test]
    fn invalid_age_is_ignored() {
        for value in ["abc", "-5", "1.5", "5 s", "+5"] {
            let resp = response(&[("age", value), ("age", "100")]);
            assert_eq!(
                current_age(&resp, &times_at_t0(), at(T0)),
                Duration::ZERO,
                "{value}"
            );
        }
    }

    #[test]
    fn apparent_age_uses_date() {
        let resp = response(&[("date", &http_date(T0 - 50))]);
        assert_eq!(current_age(&resp, &times_at_t0(), at(T0)), secs(50));
    }

    #[test]
    fn date_after_response_time_gives_no_apparent_age() {
        let resp = response(&[("date", &http_date(T0 + 50))]);
        assert_eq!(current_age(&resp, &times_at_t0(), at(T0)), Duration::ZERO);
    }

    #[test]
    fn missing_or_invalid_date_uses_response_time() {
        for resp in [HeaderMap::new(), headers(&[("date", "yesterday")])] {
            assert_eq!(current_age(&resp, &times_at_t0(), at(T0 + 3)), secs(3));
        }
    }

    #[test]
    fn corrected_age_value_adds_response_delay() {
        let times = StoredTimes {
            request_time: at(T0 - 4),
            response_time: at(T0),
        };
        let resp = response(&[("age", "10")]);
        assert_eq!(current_age(&resp, &times, at(T0)), secs(14));
    }

    #[test]
    fn corrected_initial_age_is_larger_of_apparent_and_corrected() {
        let times = StoredTimes {
            request_time: at(T0 - 4),
            response_time: at(T0),
        };
        let resp = response(&[("age", "10"), ("date", &http_date(T0 - 30))]);
        assert_eq!(current_age(&resp, &times, at(T0)), secs(30));
    }

    #[test]
    fn resident_time_is_added() {
        let resp = response(&[("age", "10")]);
        assert_eq!(current_age(&resp, &times_at_t0(), at(T0 + 60)), secs(70));
    }

    // Freshness lifetime

    #[test]
    fn s_maxage_overrides_max_age_for_a_shared_cache() {
        let resp = response(&[("cache-control", "max-age=60, s-maxage=10")]);
        assert_eq!(lifetime(200, &resp), secs(10));
    }

    #[test]
    fn max_age_overrides_expires() {
        let resp = response(&[
            ("cache-control", "max-age=60"),
            ("expires", &http_date(T0 + 600)),
        ]);
        assert_eq!(lifetime(200, &resp), secs(60));
    }

    #[test]
    fn expires_minus_date_is_the_lifetime() {
        let resp = response(&[("expires", &http_date(T0 + 600))]);
        assert_eq!(lifetime(200, &resp), secs(600));
    }

    #[test]
    fn expires_in_rfc850_form_is_honoured() {
        let resp = response(&[
            ("date", &http_date(RFC_EXAMPLE - 60)),
            ("expires", "Sunday, 06-Nov-94 08:49:37 GMT"),
        ]);
        assert_eq!(lifetime(200, &resp), secs(60));
    }

    #[test]
    fn expires_in_asctime_form_is_honoured() {
        let resp = response(&[
            ("date", &http_date(RFC_EXAMPLE - 60)),
            ("expires", "Sun Nov  6 08:49:37 1994"),
        ]);
        assert_eq!(lifetime(200, &resp), secs(60));
    }

    #[test]
    fn malformed_expires_means_stale() {
        for value in ["0", "-1", "tomorrow", "Sun, 06 Nov 1994 08:49:37 XYZ", ""] {
            let resp = response(&[
                ("expires", value),
                ("last-modified", &http_date(T0 - 86_400)),
            ]);
            assert_eq!(lifetime(200, &resp), Duration::ZERO, "{value:?}");
        }
    }

    #[test]
    fn expires_before_date_means_stale() {
        let resp = response(&[("expires", &http_date(T0 - 10))]);
        assert_eq!(lifetime(200, &resp), Duration::ZERO);
    }

    #[test]
    fn expires_without_date_uses_response_time() {
        let resp = headers(&[("expires", &http_date(T0 + 90))]);
        assert_eq!(lifetime(200, &resp), secs(90));
    }

    #[test]
    fn first_expires_field_is_used() {
        let resp = response(&[
            ("expires", &http_date(T0 + 30)),
            ("expires", &http_date(T0 + 900)),
        ]);
        assert_eq!(lifetime(200, &resp), secs(30));
    }

    #[test]
    fn heuristic_freshness_is_a_fraction_of_time_since_last_modified() {
        let resp = response(&[("last-modified", &http_date(T0 - 1000))]);
        assert_eq!(lifetime(200, &resp), secs(100));
    }

    #[test]
    fn heuristic_freshness_is_clamped() {
        let heuristics = Heuristics {
            lm_factor: 0.1,
            min: secs(200),
            max: secs(500),
        };
        let times = times_at_t0();
        let recent = response(&[("last-modified", &http_date(T0 - 1000))]);
        let old = response(&[("last-modified", &http_date(T0 - 1_000_000))]);
        assert_eq!(
            freshness_lifetime(StatusCode::OK, &recent, &times, &heuristics),
            secs(200)
        );
        assert_eq!(
            freshness_lifetime(StatusCode::OK, &old, &times, &heuristics),
            secs(500)
        );
        let old = response(&[("last-modified", &http_date(T0 - 100_000_000))]);
        assert_eq!(lifetime(200, &old), secs(86_400));
    }

    #[test]
    fn heuristic_without_last_modified_is_the_minimum() {
        let heuristics = Heuristics {
            min: secs(7),
            ..Heuristics::default()
        };
        let resp = response(&[]);
        assert_eq!(
            freshness_lifetime(StatusCode::OK, &resp, &times_at_t0(), &heuristics),
            secs(7)
        );
    }

    #[test]
    fn heuristics_only_for_heuristically_cacheable_status_or_public() {
        let modified = ("last-modified", http_date(T0 - 1000));
        let plain = response(&[(modified.0, &modified.1)]);
        for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert_eq!(lifetime(status, &plain), secs(100), "{status}");
        }
        for status in [201, 302, 307, 403, 500, 503] {
            assert_eq!(lifetime(status, &plain), Duration::ZERO, "{status}");
        }
        let public = response(&[(modified.0, &modified.1), ("cache-control", "public")]);
        assert_eq!(lifetime(500, &public), secs(100));
    }

    #[test]
    fn odd_heuristics_do_not_panic() {
        let resp = response(&[("last-modified", &http_date(T0 - 1000))]);
        let times = times_at_t0();
        let cases = [
            (f64::NAN, 0, 10, 0),
            (-1.0, 0, 10, 0),
            (f64::INFINITY, 0, 10, 10),
            (1e300, 0, 10, 10),
            (0.1, 50, 20, 20),
        ];
        for (lm_factor, min, max, expected) in cases {
            let heuristics = Heuristics {
                lm_factor,
                min: secs(min),
                max: secs(max),
            };
            assert_eq!(
                freshness_lifetime(StatusCode::OK, &resp, &times, &heuristics),
                secs(expected),
                "{lm_factor}"
            );
        }
    }

    // Storing

    #[test]
    fn explicit_freshness_makes_any_final_status_storable() {
        assert!(storable(500, &[("cache-control", "max-age=60")]));
        assert!(storable(302, &[("expires", &http_date(T0 + 60))]));
        assert!(storable(201, &[("cache-control", "s-maxage=60")]));
        assert!(storable(418, &[("cache-control", "public")]));
        assert!(storable(599, &[("cache-control", "max-age=60")]));
    }

    #[test]
    fn without_explicit_freshness_status_must_be_heuristically_cacheable() {
        for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert!(storable(status, &[]), "{status}");
        }
        for status in [201, 302, 303, 307, 400, 403, 500, 502, 503] {
            assert!(!storable(status, &[]), "{status}");
        }
    }

    #[test]
    fn partial_and_not_modified_are_never_stored() {
        assert!(!storable(206, &[("cache-control", "max-age=60")]));
        assert!(!storable(304, &[("cache-control", "max-age=60")]));
    }

    #[test]
    fn non_final_status_is_not_storable() {
        assert!(!storable(100, &[("cache-control", "max-age=60")]));
        assert!(!storable(103, &[("cache-control", "max-age=60")]));
        assert!(!storable(600, &[("cache-control", "max-age=60")]));
    }

    #[test]
    fn only_get_is_storable() {
        let resp = response(&[("cache-control", "max-age=60")]);
        for method in [Method::HEAD, Method::POST, Method::PUT, Method::OPTIONS] {
            assert!(!is_storable(
                &method,
                &HeaderMap::new(),
                StatusCode::OK,
                &resp
            ));
        }
    }

    #[test]
    fn no_store_in_request_or_response_prevents_storage() {
        assert!(!storable(200, &[("cache-control", "max-age=60, no-store")]));
        let req = headers(&[("cache-control", "no-store")]);
        let resp = response(&[("cache-control", "max-age=60")]);
        assert!(!is_storable(&Method::GET, &req, StatusCode::OK, &resp));
    }

    #[test]
    fn must_understand_ignores_no_store_only_for_understood_status() {
        assert!(storable(
            200,
            &[("cache-control", "must-understand, no-store")]
        ));
        assert!(!storable(
            299,
            &[("cache-control", "must-understand, no-store, max-age=60")]
        ));
        assert!(!storable(
            299,
            &[("cache-control", "must-understand, max-age=60")]
        ));
    }

    #[test]
    fn unqualified_private_prevents_storage_but_qualified_does_not() {
        assert!(!storable(200, &[("cache-control", "private, max-age=60")]));
        assert!(storable(
            200,
            &[("cache-control", r#"private="set-cookie", max-age=60"#)]
        ));
    }

    #[test]
    fn authorization_requires_public_must_revalidate_or_s_maxage() {
        let req = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        let allowed = |cc: &str| {
            let resp = response(&[("cache-control", cc)]);
            is_storable(&Method::GET, &req, StatusCode::OK, &resp)
        };
        assert!(!allowed("max-age=60"));
        assert!(allowed("public"));
        assert!(allowed("must-revalidate, max-age=60"));
        assert!(allowed("s-maxage=60"));
        assert!(!allowed("proxy-revalidate, max-age=60"));
    }

    #[test]
    fn vary_star_is_not_storable() {
        assert!(!storable(
            200,
            &[("cache-control", "max-age=60"), ("vary", "accept, *")]
        ));
        assert!(storable(
            200,
            &[("cache-control", "max-age=60"), ("vary", "accept")]
        ));
    }

    #[test]
    fn set_cookie_does_not_prevent_storage() {
        assert!(storable(
            200,
            &[("cache-control", "max-age=60"), ("set-cookie", "id=1")]
        ));
    }

    #[test]
    fn no_cache_response_is_storable() {
        assert!(storable(
            200,
            &[("cache-control", "no-cache"), ("etag", "\"v1\"")]
        ));
        assert!(storable(500, &[("cache-control", "no-cache, max-age=60")]));
    }

    #[test]
    fn fields_to_strip_are_private_and_no_cache_fields() {
        let resp = response(&[(
            "cache-control",
            r#"private="Set-Cookie, X-A", no-cache="x-a, X-B""#,
        )]);
        assert_eq!(
            fields_to_strip(&resp),
            vec![
                header::SET_COOKIE,
                name("set-cookie2"),
                name("x-a"),
                name("x-b")
            ]
        );
        assert_eq!(
            fields_to_strip(&response(&[("cache-control", "private")])),
            FOR_ONE_CLIENT
        );
    }

    #[test]
    fn cookies_are_stored_without_and_never_merged_in() {
        let resp = response(&[
            ("cache-control", "max-age=60"),
            ("set-cookie", "id=1"),
            ("set-cookie2", "old=1"),
        ]);
        assert!(is_storable(
            &Method::GET,
            &HeaderMap::new(),
            StatusCode::OK,
            &resp
        ));
        let strip = fields_to_strip(&resp);
        assert!(strip.contains(&header::SET_COOKIE), "{strip:?}");
        assert!(strip.contains(&name("set-cookie2")), "{strip:?}");
        // A 304 that sets a cookie refreshes the stored response, not with the cookie.
        let stored = response(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
        let nm = headers(&[("set-cookie", "id=2"), ("etag", "\"v1\"")]);
        let merged = merge_not_modified(&stored, &nm);
        assert!(!merged.contains_key(header::SET_COOKIE));
        assert_eq!(merged[header::ETAG], "\"v1\"");
    }

    // Reuse

    #[test]
    fn fresh_response_is_served_with_its_age() {
        let resp = [("cache-control", "max-age=60")];
        assert_eq!(reuse(&[], &resp, 59), Reuse::Fresh { age: secs(59) });
        assert_eq!(reuse(&[], &resp, 59).age(), Some(secs(59)));
    }

    #[test]
    fn response_is_stale_once_age_reaches_lifetime() {
        let resp = [("cache-control", "max-age=60")];
        assert_eq!(reuse(&[], &resp, 60), Reuse::Revalidate { age: secs(60) });
    }

    #[test]
    fn set_cookie_does_not_make_response_stale() {
        let resp = [("cache-control", "max-age=60"), ("set-cookie", "id=1")];
        assert_eq!(reuse(&[], &resp, 10), Reuse::Fresh { age: secs(10) });
    }

    #[test]
    fn head_is_answered_and_other_methods_miss() {
        let resp = response(&[("cache-control", "max-age=60")]);
        let answer = |method: Method| {
            evaluate(
                &method,
                &HeaderMap::new(),
                StatusCode::OK,
                &resp,
                &times_at_t0(),
                at(T0),
                &Heuristics::default(),
            )
        };
        assert_eq!(
            answer(Method::HEAD),
            Reuse::Fresh {
                age: Duration::ZERO
            }
        );
        assert_eq!(answer(Method::POST), Reuse::Miss);
        assert_eq!(Reuse::Miss.age(), None);
    }

    #[test]
    fn response_no_cache_always_revalidates() {
        let resp = [("cache-control", "max-age=600, no-cache")];
        assert_eq!(reuse(&[], &resp, 0), Reuse::Revalidate { age: secs(0) });
        let with_max_stale = [("cache-control", "max-stale")];
        assert_eq!(
            reuse(&with_max_stale, &resp, 0),
            Reuse::Revalidate { age: secs(0) }
        );
    }

    #[test]
    fn qualified_no_cache_does_not_force_revalidation() {
        let resp = [("cache-control", r#"max-age=600, no-cache="set-cookie""#)];
        assert_eq!(reuse(&[], &resp, 5), Reuse::Fresh { age: secs(5) });
    }

    #[test]
    fn request_no_cache_revalidates() {
        let resp = [("cache-control", "max-age=600")];
        let req = [("cache-control", "no-cache")];
        assert_eq!(reuse(&req, &resp, 5), Reuse::Revalidate { age: secs(5) });
    }

    #[test]
    fn request_pragma_no_cache_revalidates() {
        let resp = [("cache-control", "max-age=600")];
        assert_eq!(
            reuse(&[("pragma", "no-cache")], &resp, 5),
            Reuse::Revalidate { age: secs(5) }
        );
    }

    #[test]
    fn request_max_age_bounds_the_age() {
        let resp = [("cache-control", "max-age=600")];
        let req = [("cache-control", "max-age=30")];
        assert_eq!(reuse(&req, &resp, 30), Reuse::Fresh { age: secs(30) });
        assert_eq!(reuse(&req, &resp, 31), Reuse::Revalidate { age: secs(31) });
        let zero = [("cache-control", "max-age=0")];
        assert_eq!(reuse(&zero, &resp, 1), Reuse::Revalidate { age: secs(1) });
    }

    #[test]
    fn request_min_fresh_requires_remaining_freshness() {
        let resp = [("cache-control", "max-age=100")];
        let req = [("cache-control", "min-fresh=30")];
        assert_eq!(reuse(&req, &resp, 70), Reuse::Fresh { age: secs(70) });
        assert_eq!(reuse(&req, &resp, 71), Reuse::Revalidate { age: secs(71) });
    }

    #[test]
    fn min_fresh_outweighs_max_stale() {
        let resp = [("cache-control", "max-age=100")];
        let req = [("cache-control", "min-fresh=10, max-stale")];
        assert_eq!(
            reuse(&req, &resp, 200),
            Reuse::Revalidate { age: secs(200) }
        );
    }

    #[test]
    fn request_max_stale_serves_stale_within_its_limit() {
        let resp = [("cache-control", "max-age=60")];
        let req = [("cache-control", "max-stale=30")];
        assert_eq!(reuse(&req, &resp, 90), Reuse::Stale { age: secs(90) });
        assert_eq!(reuse(&req, &resp, 91), Reuse::Revalidate { age: secs(91) });
    }

    #[test]
    fn bare_max_stale_serves_any_staleness() {
        let resp = [("cache-control", "max-age=60")];
        let req = [("cache-control", "max-stale")];
        assert_eq!(
            reuse(&req, &resp, 1_000_000),
            Reuse::Stale {
                age: secs(1_000_000)
            }
        );
    }

    #[test]
    fn must_revalidate_proxy_revalidate_and_s_maxage_forbid_stale() {
        let req = [("cache-control", "max-stale")];
        for cc in [
            "max-age=60, must-revalidate",
            "max-age=60, proxy-revalidate",
            "s-maxage=60",
            "max-age=60, must-revalidate, stale-while-revalidate=600",
        ] {
            let resp = [("cache-control", cc)];
            assert_eq!(
                reuse(&req, &resp, 61),
                Reuse::Revalidate { age: secs(61) },
                "{cc}"
            );
        }
    }

    #[test]
    fn stale_while_revalidate_window() {
        let resp = [("cache-control", "max-age=60, stale-while-revalidate=30")];
        assert_eq!(reuse(&[], &resp, 59), Reuse::Fresh { age: secs(59) });
        assert_eq!(
            reuse(&[], &resp, 60),
            Reuse::StaleWhileRevalidate { age: secs(60) }
        );
        assert_eq!(
            reuse(&[], &resp, 90),
            Reuse::StaleWhileRevalidate { age: secs(90) }
        );
        assert_eq!(reuse(&[], &resp, 91), Reuse::Revalidate { age: secs(91) });
    }

    #[test]
    fn stale_while_revalidate_is_preferred_over_max_stale() {
        let resp = [("cache-control", "max-age=60, stale-while-revalidate=30")];
        let req = [("cache-control", "max-stale")];
        assert_eq!(
            reuse(&req, &resp, 70),
            Reuse::StaleWhileRevalidate { age: secs(70) }
        );
        assert_eq!(reuse(&req, &resp, 100), Reuse::Stale { age: secs(100) });
    }

    #[test]
    fn request_directives_override_stale_while_revalidate() {
        let resp = [("cache-control", "max-age=60, stale-while-revalidate=30")];
        let req = [("cache-control", "max-age=60")];
        assert_eq!(reuse(&req, &resp, 70), Reuse::Revalidate { age: secs(70) });
    }

    #[test]
    fn heuristic_freshness_is_used_by_evaluate() {
        let resp = [("last-modified", &*http_date(T0 - 1000))];
        assert_eq!(reuse(&[], &resp, 99), Reuse::Fresh { age: secs(99) });
        assert_eq!(reuse(&[], &resp, 100), Reuse::Revalidate { age: secs(100) });
    }

    // Stale on error

    #[test]
    fn stale_if_error_window_from_response() {
        let resp = [("cache-control", "max-age=60, stale-if-error=100")];
        assert!(on_error(&[], &resp, 160));
        assert!(!on_error(&[], &resp, 161));
        assert!(!on_error(&[], &[("cache-control", "max-age=60")], 61));
    }

    #[test]
    fn stale_if_error_window_from_request() {
        let resp = [("cache-control", "max-age=60")];
        let req = [("cache-control", "stale-if-error=20")];
        assert!(on_error(&req, &resp, 80));
        assert!(!on_error(&req, &resp, 81));
    }

    #[test]
    fn larger_stale_if_error_window_applies() {
        let resp = [("cache-control", "max-age=60, stale-if-error=10")];
        let req = [("cache-control", "stale-if-error=50")];
        assert!(on_error(&req, &resp, 110));
    }

    #[test]
    fn stale_if_error_forbidden_by_revalidation_directives() {
        for cc in [
            "max-age=60, must-revalidate, stale-if-error=600",
            "max-age=60, proxy-revalidate, stale-if-error=600",
            "s-maxage=60, stale-if-error=600",
            "max-age=60, no-cache, stale-if-error=600",
        ] {
            assert!(!on_error(&[], &[("cache-control", cc)], 61), "{cc}");
        }
    }

    #[test]
    fn fresh_response_is_usable_on_error_unless_no_cache() {
        assert!(on_error(&[], &[("cache-control", "max-age=60")], 10));
        assert!(!on_error(
            &[],
            &[("cache-control", "max-age=60, no-cache")],
            10
        ));
    }

    #[test]
    fn remaining_freshness_is_zero_when_stale() {
        let resp = response(&[("cache-control", "max-age=60")]);
        let remaining = |elapsed| {
            remaining_freshness(
                StatusCode::OK,
                &resp,
                &times_at_t0(),
                at(T0 + elapsed),
                &Heuristics::default(),
            )
        };
        assert_eq!(remaining(20), secs(40));
        assert_eq!(remaining(60), Duration::ZERO);
        assert_eq!(remaining(600), Duration::ZERO);
    }

    // Validation

    #[test]
    fn conditional_request_uses_etag_and_last_modified() {
        let modified = http_date(T0 - 100);
        let stored = response(&[("etag", "W/\"v1\""), ("last-modified", &modified)]);
        let conditions = conditional_request_headers(&stored);
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[header::IF_NONE_MATCH], "W/\"v1\"");
        assert_eq!(conditions[header::IF_MODIFIED_SINCE], modified.as_str());
    }

    #[test]
    fn conditional_request_skips_invalid_validators_and_normalizes_dates() {
        let stored = response(&[("etag", "v1"), ("last-modified", "last week")]);
        assert!(conditional_request_headers(&stored).is_empty());
        let rfc850 = response(&[("last-modified", "Sunday, 06-Nov-94 08:49:37 GMT")]);
        assert_eq!(
            conditional_request_headers(&rfc850)[header::IF_MODIFIED_SINCE],
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }

    #[test]
    fn conditional_request_is_empty_without_validators() {
        let stored = response(&[("cache-control", "max-age=60")]);
        assert!(conditional_request_headers(&stored).is_empty());
    }

    #[test]
    fn not_modified_strong_etag_selects_same_strong_etag() {
        let stored = response(&[("etag", "\"v1\"")]);
        assert!(not_modified_matches(
            &stored,
            &headers(&[("etag", "\"v1\"")])
        ));
        assert!(!not_modified_matches(
            &stored,
            &headers(&[("etag", "\"v2\"")])
        ));
        let weak_stored = response(&[("etag", "W/\"v1\"")]);
        assert!(!not_modified_matches(
            &weak_stored,
            &headers(&[("etag", "\"v1\"")])
        ));
    }

    #[test]
    fn not_modified_weak_etag_uses_weak_comparison() {
        let nm = headers(&[("etag", "W/\"v1\"")]);
        assert!(not_modified_matches(&response(&[("etag", "\"v1\"")]), &nm));
        assert!(not_modified_matches(
            &response(&[("etag", "W/\"v1\"")]),
            &nm
        ));
        assert!(!not_modified_matches(
            &response(&[("etag", "W/\"v2\"")]),
            &nm
        ));
        assert!(!not_modified_matches(&response(&[]), &nm));
    }

    #[test]
    fn not_modified_with_malformed_etag_selects_nothing() {
        let stored = response(&[("etag", "\"v1\"")]);
        assert!(!not_modified_matches(&stored, &headers(&[("etag", "v1")])));
    }

    #[test]
    fn not_modified_last_modified_must_match() {
        let stored = response(&[("last-modified", &http_date(T0 - 100))]);
        let same = headers(&[("last-modified", "Tuesday, 14-Nov-23 22:11:40 GMT")]);
        assert!(not_modified_matches(&stored, &same));
        let other = headers(&[("last-modified", &http_date(T0 - 50))]);
        assert!(!not_modified_matches(&stored, &other));
    }

    #[test]
    fn not_modified_without_validators_selects_stored() {
        let stored = response(&[("cache-control", "max-age=60")]);
        assert!(not_modified_matches(
            &stored,
            &headers(&[("date", &http_date(T0))])
        ));
    }

    #[test]
    fn not_modified_without_validators_does_not_select_validated_stored() {
        let stored = response(&[("etag", "\"v1\"")]);
        assert!(!not_modified_matches(&stored, &HeaderMap::new()));
    }

    #[test]
    fn merge_replaces_stored_fields_with_those_of_the_304() {
        let stored = response(&[
            ("cache-control", "max-age=60"),
            ("x-multi", "a"),
            ("x-multi", "b"),
            ("etag", "\"v1\""),
            ("content-type", "text/plain"),
        ]);
        let nm = headers(&[
            ("cache-control", "max-age=600"),
            ("x-multi", "c"),
            ("x-new", "d"),
            ("date", &http_date(T0 + 10)),
        ]);
        let merged = merge_not_modified(&stored, &nm);
        assert_eq!(merged[header::CACHE_CONTROL], "max-age=600");
        let multi: Vec<_> = merged.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["c"]);
        assert_eq!(merged["x-new"], "d");
        assert_eq!(merged[header::ETAG], "\"v1\"");
        assert_eq!(merged[header::CONTENT_TYPE], "text/plain");
        assert_eq!(merged[header::DATE], http_date(T0 + 10).as_str());
    }

    #[test]
    fn merge_keeps_content_length_and_body_fields() {
        let stored = response(&[("content-length", "42"), ("content-encoding", "gzip")]);
        let nm = headers(&[
            ("content-length", "0"),
            ("content-encoding", "br"),
            ("content-range", "bytes 0-1/2"),
            ("transfer-encoding", "chunked"),
        ]);
        let merged = merge_not_modified(&stored, &nm);
        assert_eq!(merged[header::CONTENT_LENGTH], "42");
        assert_eq!(merged[header::CONTENT_ENCODING], "gzip");
        assert!(!merged.contains_key(header::CONTENT_RANGE));
        assert!(!merged.contains_key(header::TRANSFER_ENCODING));
    }

    #[test]
    fn merge_ignores_hop_by_hop_and_proxy_fields() {
        let nm = headers(&[
            ("connection", "x-hop, keep-alive"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authenticate", "Basic"),
            ("x-end", "2"),
        ]);
        let merged = merge_not_modified(&response(&[]), &nm);
        for field in ["connection", "x-hop", "keep-alive", "proxy-authenticate"] {
            assert!(!merged.contains_key(field), "{field}");
        }
        assert_eq!(merged["x-end"], "2");
    }

    #[test]
    fn merge_drops_old_age_and_date_missing_from_the_304() {
        let stored = response(&[("age", "30")]);
        let merged = merge_not_modified(&stored, &headers(&[("etag", "\"v1\"")]));
        assert!(!merged.contains_key(header::AGE));
        assert!(!merged.contains_key(header::DATE));
        let merged = merge_not_modified(&stored, &headers(&[("age", "3")]));
        assert_eq!(merged[header::AGE], "3");
    }

    #[test]
    fn merge_strips_fields_the_cache_control_keeps_private() {
        let stored = response(&[("cache-control", r#"max-age=60, private="set-cookie""#)]);
        let nm = headers(&[("set-cookie", "id=2"), ("x-other", "1")]);
        let merged = merge_not_modified(&stored, &nm);
        assert!(!merged.contains_key(header::SET_COOKIE));
        assert_eq!(merged["x-other"], "1");
    }

    // Client conditional requests

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let stored = response(&[("etag", "\"v1\"")]);
        let matching = headers(&[("if-none-match", "\"v0\", W/\"v1\"")]);
        assert!(client_not_modified(&matching, &stored));
        let other = headers(&[("if-none-match", "\"v2\"")]);
        assert!(!client_not_modified(&other, &stored));
    }

    #[test]
    fn if_none_match_fields_are_combined_and_may_hold_commas() {
        let stored = response(&[("etag", "\"a,b\"")]);
        let req = headers(&[("if-none-match", "\"x\""), ("if-none-match", "\"a,b\"")]);
        assert!(client_not_modified(&req, &stored));
    }

    #[test]
    fn if_none_match_star_matches_any_stored_response() {
        let req = headers(&[("if-none-match", "*")]);
        assert!(client_not_modified(&req, &response(&[])));
    }

    #[test]
    fn malformed_if_none_match_means_modified() {
        let stored = response(&[("etag", "\"v1\"")]);
        let req = headers(&[("if-none-match", "\"v1\", v2")]);
        assert!(!client_not_modified(&req, &stored));
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        let stored = response(&[("etag", "\"v1\""), ("last-modified", &http_date(T0 - 100))]);
        let req = headers(&[
            ("if-none-match", "\"v2\""),
            ("if-modified-since", &http_date(T0)),
        ]);
        assert!(!client_not_modified(&req, &stored));
    }

    #[test]
    fn if_modified_since_compares_last_modified() {
        let stored = response(&[("last-modified", &http_date(T0 - 100))]);
        let at_modification = headers(&[("if-modified-since", &http_date(T0 - 100))]);
        assert!(client_not_modified(&at_modification, &stored));
        let before = headers(&[("if-modified-since", &http_date(T0 - 101))]);
        assert!(!client_not_modified(&before, &stored));
    }

    #[test]
    fn if_modified_since_falls_back_to_date() {
        let stored = response(&[]);
        let after = headers(&[("if-modified-since", &http_date(T0 + 1))]);
        assert!(client_not_modified(&after, &stored));
        let before = headers(&[("if-modified-since", &http_date(T0 - 1))]);
        assert!(!client_not_modified(&before, &stored));
    }

    #[test]
    fn invalid_or_repeated_if_modified_since_is_ignored() {
        let stored = response(&[("last-modified", &http_date(T0 - 100))]);
        let invalid = headers(&[("if-modified-since", "now")]);
        assert!(!client_not_modified(&invalid, &stored));
        let repeated = headers(&[
            ("if-modified-since", &http_date(T0)),
            ("if-modified-since", &http_date(T0)),
        ]);
        assert!(!client_not_modified(&repeated, &stored));
    }

    // Vary

    #[test]
    fn vary_fields_are_combined_lowercased_and_deduplicated() {
        let resp = response(&[
            ("vary", "Accept-Encoding, ACCEPT"),
            ("vary", "accept-encoding"),
        ]);
        let values = vary_request_values(&resp, &HeaderMap::new()).expect("no star");
        assert_eq!(
            values,
            vec![(header::ACCEPT_ENCODING, None), (header::ACCEPT, None),]
        );
    }

    #[test]
    fn vary_star_has_no_request_values() {
        let resp = response(&[("vary", "accept"), ("vary", "*")]);
        assert_eq!(vary_request_values(&resp, &HeaderMap::new()), None);
    }

    #[test]
    fn vary_request_values_are_joined_and_trimmed() {
        let resp = response(&[("vary", "accept-language")]);
        let req = headers(&[("accept-language", " en "), ("accept-language", "fr\t")]);
        let values = vary_request_values(&resp, &req).expect("no star");
        assert_eq!(
            values,
            vec![(header::ACCEPT_LANGUAGE, Some("en, fr".to_owned()))]
        );
    }

    #[test]
    fn vary_matches_compares_normalized_values() {
        let resp = response(&[("vary", "accept-encoding, x-absent")]);
        let stored = vary_request_values(&resp, &headers(&[("accept-encoding", "gzip, br")]))
            .expect("no star");
        let split = headers(&[("accept-encoding", "gzip "), ("accept-encoding", " br")]);
        assert!(vary_matches(&stored, &split));
        assert!(!vary_matches(
            &stored,
            &headers(&[("accept-encoding", "gzip")])
        ));
        assert!(!vary_matches(&stored, &HeaderMap::new()));
        let extra = headers(&[("accept-encoding", "gzip, br"), ("x-absent", "")]);
        assert!(!vary_matches(&stored, &extra));
    }

    #[test]
    fn vary_values_with_other_bytes_never_collide() {
        let resp = response(&[("vary", "x-v")]);
        let value = |bytes: &[u8]| {
            let mut req = HeaderMap::new();
            req.insert("x-v", HeaderValue::from_bytes(bytes).expect("value"));
            vary_request_values(&resp, &req).expect("no star")
        };
        assert_ne!(value(b"\xff"), value(b"\xfe"));
        assert_ne!(value(b"\xff"), value(b"%FF"));
        assert_eq!(value(b"\xff")[0].1.as_deref(), Some("%FF"));
    }

    // Invalidation and Age field

    #[test]
    fn unsafe_method_with_success_or_redirect_invalidates() {
        let unknown = Method::from_bytes(b"PURGE").expect("method");
        for method in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            unknown,
        ] {
            assert!(invalidates(&method, StatusCode::OK), "{method}");
            assert!(invalidates(&method, StatusCode::SEE_OTHER), "{method}");
        }
    }

    #[test]
    fn error_status_or_safe_method_does_not_invalidate() {
        assert!(!invalidates(&Method::POST, StatusCode::NOT_FOUND));
        assert!(!invalidates(&Method::POST, StatusCode::BAD_GATEWAY));
        assert!(!invalidates(&Method::POST, StatusCode::CONTINUE));
        for method in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(!invalidates(&method, StatusCode::OK), "{method}");
        }
    }

    #[test]
    fn age_header_is_whole_seconds_capped_at_2_pow_31() {
        assert_eq!(age_header(Duration::from_millis(5_999)), "5");
        assert_eq!(age_header(secs(u64::MAX)), "2147483648");
    }

    // Robustness

    const FIELDS: [&str; 14] = [
        "cache-control",
        "pragma",
        "age",
        "date",
        "expires",
        "last-modified",
        "etag",
        "vary",
        "connection",
        "if-none-match",
        "if-modified-since",
        "authorization",
        "set-cookie",
        "accept",
    ];

    fn field_bytes() -> impl Strategy<Value = Vec<u8>> {
        let interesting = prop::sample::select(b"0123456789,;=\"\\ \tW/*-aeGMTnocahx".to_vec());
        prop::collection::vec(prop_oneof![any::<u8>(), interesting], 0..48)
    }

    proptest! {
        #[test]
        fn arbitrary_header_bytes_never_panic(
            fields in prop::collection::vec((0..FIELDS.len(), field_bytes()), 0..12),
            status in 100u16..1000,
            clock in prop::collection::vec(0u64..4_000_000_000, 3),
            lm_factor in any::<f64>(),
            bounds in (any::<u64>(), any::<u64>()),
        ) {
            let mut map = HeaderMap::new();
            for (index, bytes) in fields {
                if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                    map.append(HeaderName::from_static(FIELDS[index]), value);
                }
            }
            let status = StatusCode::from_u16(status).expect("status in range");
            let times = StoredTimes { request_time: at(clock[0]), response_time: at(clock[1]) };
            let now = at(clock[2]);
            let heuristics = Heuristics {
                lm_factor,
                min: secs(bounds.0),
                max: secs(bounds.1),
            };
            CacheControl::parse_request(&map);
            is_storable(&Method::GET, &map, status, &map);
            fields_to_strip(&map);
            evaluate(&Method::GET, &map, status, &map, &times, now, &heuristics);
            may_serve_stale_on_error(&map, status, &map, &times, now, &heuristics);
            remaining_freshness(status, &map, &times, now, &heuristics);
            conditional_request_headers(&map);
            not_modified_matches(&map, &map);
            merge_not_modified(&map, &map);
            client_not_modified(&map, &map);
            if let Some(values) = vary_request_values(&map, &map) {
                prop_assert!(vary_matches(&values, &map));
            }
            age_header(current_age(&map, &times, now));
        }
    }
}
