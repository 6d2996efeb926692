//! Validators: the conditional request that revalidates a stored response, whether a 304
//! applies to it and what it updates, and the client's own conditionals (RFC 9110 §8.8,
//! §13; RFC 9111 §4.3).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::ranges::{content_range, same_strong_validator};
use super::storable::fields_to_strip;
use super::{date, list_members, parse_date};

/// An entity-tag (RFC 9110 §8.8.3): its weakness and its opaque-tag without quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EntityTag<'a> {
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
pub(super) fn entity_tags(value: &[u8]) -> Option<Vec<EntityTag<'_>>> {
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
pub(super) fn etag(headers: &HeaderMap) -> Option<EntityTag<'_>> {
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

/// If-None-Match for a request that no stored variant of its URL answers, naming the
/// entity-tags of all of them (RFC 9111 §4.3.1: "If-None-Match [...] containing all of the
/// entity tags from the stored responses"; §4.1: a cache can "validate with the origin
/// server using all stored responses"). `None` when no variant has a valid ETag.
pub fn variants_condition<'a>(
    variants: impl IntoIterator<Item = &'a HeaderMap>,
) -> Option<HeaderValue> {
    let mut listed: Vec<&[u8]> = Vec::new();
    for stored in variants {
        if let (Some(value), Some(_)) = (stored.get(header::ETAG), etag(stored)) {
            let value = value.as_bytes().trim_ascii();
            if !listed.contains(&value) {
                listed.push(value);
            }
        }
    }
    if listed.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&listed.join(&b", "[..])).ok()
}

/// The stored variant a 304 selects for update (RFC 9111 §4.3.4: "If the new response
/// contains a strong validator [...], then that strong validator identifies the selected
/// representation for update"), by its ETag or, without one, its Last-Modified. A 304
/// without a validator selects none here: among several variants it names none of them.
pub fn selected_variant<'a>(
    variants: impl IntoIterator<Item = &'a HeaderMap>,
    not_modified: &HeaderMap,
) -> Option<usize> {
    if !not_modified.contains_key(header::ETAG) && !not_modified.contains_key(header::LAST_MODIFIED)
    {
        return None;
    }
    variants
        .into_iter()
        .position(|stored| not_modified_matches(stored, not_modified))
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

/// Whether a 206 updates a stored complete response of `stored_len` bytes (RFC 9111 §3.4:
/// "When combining the new response with one or more stored responses, a cache MUST update
/// the stored response header fields using the header fields provided in the new response,
/// as per Section 3.2", for ranges that "all share the same strong validator"). The 206 must
/// be of one range of the same complete length: a multipart 206's Content-Type describes its
/// parts, not the representation. The update is that of a 304 ([`merge_not_modified`]).
pub fn partial_updates(stored: &HeaderMap, stored_len: u64, partial: &HeaderMap) -> bool {
    content_range(partial).is_some_and(|(_, length)| length == stored_len)
        && same_strong_validator(stored, partial)
}

/// Fields a 304 never replaces (RFC 9111 §3.1, §3.2): hop-by-hop and proxy-specific fields,
/// Content-Length, and the fields the stored body depends on (Content-Encoding, Content-Range).
pub(super) fn kept_on_update(name: &HeaderName) -> bool {
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
pub fn merge_not_modified(
    stored: &HeaderMap,
    not_modified: &HeaderMap,
    targets: &[HeaderName],
) -> HeaderMap {
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
    for name in fields_to_strip(&merged, targets) {
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
    let Some(since) = line.to_str().ok().and_then(parse_date) else {
        return false;
    };
    date(stored, header::LAST_MODIFIED)
        .or_else(|| date(stored, header::DATE))
        .is_some_and(|modified| modified <= since)
}
