//! Freshness policy of Canopy's shared cache: what may be stored, how long it stays fresh, and when it must be revalidated (RFC 9111, RFC 5861, RFC 9110 §13).
//!
//! Every function is a pure function of header maps and explicit times, so each
//! rule can be tested on its own. Where the RFCs leave a choice, the choice is
//! documented on the item that makes it. No function panics on any header bytes.
//!
//! - [`cache_control`]: the directives of a request or response.
//! - [`targeted`]: which targeted field (RFC 9213) governs a response instead of Cache-Control.
//! - [`freshness`]: freshness lifetime, current age, the Age field.
//! - [`storable`]: what may be stored, and what is invalidated.
//! - [`reuse`]: whether a stored response answers a request, or stands in for an error.
//! - [`validators`]: revalidation, 304 merging, the client's own conditionals.
//! - [`vary`]: the secondary cache key.
//! - [`ranges`]: range requests, If-Range, and storing and combining partial content.
//! - [`post`]: a POST response kept for later GETs of the same URI.

mod cache_control;
mod freshness;
mod post;
pub mod ranges;
mod reuse;
mod storable;
mod targeted;
mod validators;
mod vary;

pub use cache_control::CacheControl;
pub use freshness::{
    age_header, current_age, freshness_lifetime, remaining_freshness, Heuristics, StoredTimes,
};
pub use post::post_reusable_for_get;
pub use reuse::{evaluate, may_serve_stale_on_error, Reuse, StoredResponse};
pub use storable::{
    answers_credentials, fields_to_strip, invalidates, is_storable, FOR_ONE_CLIENT,
};
pub use validators::{
    client_not_modified, conditional_request_headers, merge_not_modified, not_modified_matches,
    partial_updates, selected_variant, variants_condition,
};
pub use vary::{vary_matches, vary_request_values};

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName};

/// Delta-seconds above this, and overflowing sums, are taken as this value (RFC 9111 §1.2.2).
const MAX_DELTA_SECONDS: u64 = 1 << 31;

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
    parse_date(headers.get(name)?.to_str().ok()?)
}

/// An HTTP-date in any of its three forms. HTTP-date is case-sensitive (RFC 9110 §5.6.7), but
/// senders get the case of day and month names wrong, and reading `sun, 06 nov 1994` as the
/// date it plainly is costs nothing when the case is right: only a failed parse looks again.
/// Two-digit RFC 850 years are read in 1970–2069.
fn parse_date(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Ok(date) = httpdate::parse_http_date(text) {
        return Some(date);
    }
    let mut cased = String::with_capacity(text.len());
    let mut word_start = true;
    for c in text.chars() {
        if c.is_ascii_alphabetic() {
            cased.push(if word_start {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            });
            word_start = false;
        } else {
            cased.push(c);
            word_start = true;
        }
    }
    let cased = cased.replace("Gmt", "GMT");
    httpdate::parse_http_date(&cased).ok()
}

fn elapsed(from: SystemTime, to: SystemTime) -> Duration {
    to.duration_since(from).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests;
