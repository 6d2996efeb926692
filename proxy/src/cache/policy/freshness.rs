//! How long a stored response stays fresh, and how old it is (RFC 9111 §4.2): explicit and
//! heuristic freshness lifetimes, the current age, the Age field.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use super::cache_control::CacheControl;
use super::{date, delta_seconds, elapsed, list_members, MAX_DELTA_SECONDS};

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
pub(super) fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Freshness lifetime for a shared cache (RFC 9111 §4.2.1): `s-maxage`, else `max-age`, else
/// `Expires − Date`, else a heuristic, else 0.
///
/// Only the first Expires field counts; an invalid Expires means already expired (§5.3) and
/// rules out heuristics. Without a valid Date, `response_time` stands in for it (RFC 9110
/// §6.6.1). Heuristics apply to heuristically cacheable statuses and to `public` responses (§4.2.2).
/// When a field of `targets` governs (RFC 9213), its directives stand for Cache-Control and
/// Expires is ignored.
pub fn freshness_lifetime(
    status: StatusCode,
    resp: &HeaderMap,
    times: &StoredTimes,
    heuristics: &Heuristics,
    targets: &[HeaderName],
) -> Duration {
    let cc = CacheControl::parse_response(resp, targets);
    if let Some(lifetime) = cc.s_maxage.or(cc.max_age) {
        return lifetime;
    }
    if !cc.targeted && resp.contains_key(header::EXPIRES) {
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
pub(super) fn age_value(resp: &HeaderMap) -> Duration {
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
    targets: &[HeaderName],
) -> Duration {
    freshness_lifetime(status, resp, times, heuristics, targets)
        .saturating_sub(current_age(resp, times, now))
}

/// The Age field for a served response: whole seconds, capped at 2^31 (RFC 9111 §1.2.2, §5.1).
pub fn age_header(current_age: Duration) -> HeaderValue {
    HeaderValue::from(current_age.as_secs().min(MAX_DELTA_SECONDS))
}
