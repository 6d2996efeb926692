//! Whether a stored response may answer a request: fresh, stale as allowed, stale while
//! revalidated, or after revalidation (RFC 9111 §4.2, §5.2.1, RFC 5861), and when it may
//! stand in for an upstream error.

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName};
use http::{Method, StatusCode};

use super::cache_control::CacheControl;
use super::freshness::{current_age, freshness_lifetime, Heuristics, StoredTimes};

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

/// A stored response as the reuse rules read it.
#[derive(Debug, Clone, Copy)]
pub struct StoredResponse<'a> {
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
    pub times: StoredTimes,
}

impl StoredResponse<'_> {
    /// Its directives, its current age at `now` and its freshness lifetime.
    fn assess(
        &self,
        now: SystemTime,
        heuristics: &Heuristics,
        targets: &[HeaderName],
    ) -> (CacheControl, Duration, Duration) {
        let age = current_age(self.headers, &self.times, now);
        let lifetime =
            freshness_lifetime(self.status, self.headers, &self.times, heuristics, targets);
        (
            CacheControl::parse_response(self.headers, targets),
            age,
            lifetime,
        )
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
    stored: &StoredResponse<'_>,
    now: SystemTime,
    heuristics: &Heuristics,
    targets: &[HeaderName],
) -> Reuse {
    if method != Method::GET && method != Method::HEAD {
        return Reuse::Miss;
    }
    let request = CacheControl::parse_request(req);
    let (response, age, lifetime) = stored.assess(now, heuristics, targets);
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
    stored: &StoredResponse<'_>,
    now: SystemTime,
    heuristics: &Heuristics,
    targets: &[HeaderName],
) -> bool {
    let (response, age, lifetime) = stored.assess(now, heuristics, targets);
    if response.no_cache {
        return false;
    }
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
