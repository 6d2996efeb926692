//! Range requests and partial content (RFC 9110 §14, §13.1.5; RFC 9111 §3.3, §3.4): which
//! bytes a request asks for, whether If-Range lets it have them, and when a 206 may be
//! stored or combined with what is stored.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::date;
use super::storable::is_storable;
use super::validators::etag;
use super::vary::vary_names;

/// More ranges than this in one request are served whole: many small ranges are the mark
/// of a broken client or an attack (RFC 9110 §14.2), and nginx's `max_ranges` draws a line too.
pub const MAX_RANGES: usize = 16;

/// One byte-range-spec of a Range field (RFC 9110 §14.1.1), not yet set against a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-last`, or `first-` (to the end) when `last` is `None`.
    From { first: u64, last: Option<u64> },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// A satisfiable range set against a representation's length: bytes `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

impl ByteRange {
    /// Its size in bytes (never 0: a range holds its first byte).
    pub fn size(&self) -> u64 {
        self.last - self.first + 1
    }

    /// The Content-Range of this range of a representation `complete` bytes long.
    pub fn content_range(&self, complete: u64) -> HeaderValue {
        HeaderValue::from_str(&format!("bytes {}-{}/{complete}", self.first, self.last))
            .expect("digits, spaces and punctuation")
    }
}

/// What a Range field asks of a representation of known length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAnswer {
    /// Serve the whole representation with 200: no Range, or one to ignore.
    Whole,
    /// 206 with these ranges, ascending and neither overlapping nor adjacent.
    Partial(Vec<ByteRange>),
    /// 416 with `Content-Range: bytes */length`.
    Unsatisfiable,
}

/// The byte-range-specs of a Range field; `None` when there is none to honour: no field,
/// several lines, another unit, or any malformed spec.
///
/// RFC 9110 §14.2: "An origin server MUST ignore a Range header field that contains a range
/// unit it does not understand. A proxy MAY discard a Range header field that contains a
/// range unit it does not understand." and "A server MAY ignore the Range header field."
pub fn range_specs(request: &HeaderMap) -> Option<Vec<RangeSpec>> {
    let mut lines = request.get_all(header::RANGE).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return None;
    };
    let text = line.to_str().ok()?.trim();
    let (unit, set) = text.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let number = |digits: &str| -> Option<u64> {
        let digits = digits.trim();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let mut specs = Vec::new();
    for member in set.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (first, last) = member.split_once('-')?;
        let spec = if first.trim().is_empty() {
            RangeSpec::Suffix(number(last)?)
        } else {
            let first = number(first)?;
            let last = match last.trim() {
                "" => None,
                last => Some(number(last)?),
            };
            // RFC 9110 §14.1.1: "A byte-range-spec is invalid if the last-pos value is
            // present and less than the first-pos."
            if last.is_some_and(|last| last < first) {
                return None;
            }
            RangeSpec::From { first, last }
        };
        specs.push(spec);
    }
    (!specs.is_empty()).then_some(specs)
}

/// The specs set against a representation `length` bytes long, sorted and coalesced.
///
/// RFC 9110 §14.1.2: "a valid bytes range-spec is satisfiable if it is either: an int-range
/// with a first-pos that is less than the current length of the selected representation or a
/// suffix-range with a non-zero suffix-length." A range of an empty representation is
/// answered whole, as the field may be ignored (§14.2).
pub fn answer(specs: &[RangeSpec], length: u64) -> RangeAnswer {
    if length == 0 || specs.len() > MAX_RANGES {
        return RangeAnswer::Whole;
    }
    let mut ranges: Vec<ByteRange> = specs
        .iter()
        .filter_map(|spec| match *spec {
            RangeSpec::From { first, last } if first < length => Some(ByteRange {
                first,
                last: last.map_or(length - 1, |last| last.min(length - 1)),
            }),
            RangeSpec::From { .. } | RangeSpec::Suffix(0) => None,
            // "If the selected representation is shorter than the specified suffix-length,
            // the entire representation is used." (§14.1.2)
            RangeSpec::Suffix(n) => Some(ByteRange {
                first: length.saturating_sub(n),
                last: length - 1,
            }),
        })
        .collect();
    if ranges.is_empty() {
        return RangeAnswer::Unsatisfiable;
    }
    // RFC 9110 §14.6: "a server MAY coalesce any of the ranges that overlap, or that are
    // separated by a gap that is smaller than the overhead of sending multiple parts".
    ranges.sort_by_key(|range| range.first);
    let mut coalesced: Vec<ByteRange> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match coalesced.last_mut() {
            Some(previous) if range.first <= previous.last.saturating_add(80) => {
                previous.last = previous.last.max(range.last);
            }
            _ => coalesced.push(range),
        }
    }
    if coalesced.len() == 1 && coalesced[0].size() == length {
        return RangeAnswer::Whole;
    }
    RangeAnswer::Partial(coalesced)
}

/// The lowest byte offset a Range field asks for, when known without the length (a suffix
/// range needs the length): how much a miss would fetch before the client's first byte.
pub fn first_offset(specs: &[RangeSpec]) -> Option<u64> {
    specs
        .iter()
        .map(|spec| match spec {
            RangeSpec::From { first, .. } => Some(*first),
            RangeSpec::Suffix(_) => None,
        })
        .min()
        .flatten()
}

/// Whether a request's Range is to be honoured against this stored response (RFC 9110
/// §13.1.5, §14.2): only for GET, and only when If-Range, if any, holds.
///
/// "A server MUST ignore a Range header field received with a request method that is
/// unrecognized or for which range handling is not defined. For this specification, GET is
/// the only method for which range handling is defined." (RFC 9110 §14.2)
pub fn range_applies(method: &Method, request: &HeaderMap, stored: &HeaderMap) -> bool {
    method == Method::GET && if_range_holds(request, stored)
}

/// If-Range (RFC 9110 §13.1.5), as a cache evaluates it against its stored response: true
/// without the field; an entity-tag must match the stored ETag by strong comparison; a date
/// must equal the stored Last-Modified, which must be strong.
///
/// "If the HTTP-date validator provided is not a strong validator in the sense defined by
/// Section 8.8.2.2, the condition is false." §8.8.2.2 makes Last-Modified strong for "an
/// intermediate cache" when "that cache entry includes a Date value, and the presented
/// Last-Modified time is at least 60 seconds before the Date value."
pub fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let mut lines = request.get_all(header::IF_RANGE).iter();
    let Some(line) = lines.next() else {
        return true;
    };
    if lines.next().is_some() {
        return false;
    }
    let value = line.as_bytes().trim_ascii();
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        let mut condition = HeaderMap::new();
        condition.insert(header::ETAG, line.clone());
        return match (strong_tag(&condition), strong_tag(stored)) {
            (Some(asked), Some(current)) => asked == current,
            _ => false,
        };
    }
    let asked = line
        .to_str()
        .ok()
        .and_then(|text| httpdate::parse_http_date(text.trim()).ok());
    let (Some(asked), Some(modified), Some(dated)) = (
        asked,
        date(stored, header::LAST_MODIFIED),
        date(stored, header::DATE),
    ) else {
        return false;
    };
    asked == modified && modified + Duration::from_secs(60) <= dated
}

/// A 206's single Content-Range (RFC 9110 §14.4): the range and the complete length.
/// `None` for `*` lengths, unsatisfied ranges, multipart answers and anything malformed.
pub fn content_range(response: &HeaderMap) -> Option<(ByteRange, u64)> {
    let mut lines = response.get_all(header::CONTENT_RANGE).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return None;
    };
    let text = line.to_str().ok()?.trim();
    let rest = text.strip_prefix("bytes ")?;
    let (range, complete) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let digits = |text: &str| {
        let text = text.trim();
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
    };
    let (first, last, complete) = (digits(first)?, digits(last)?, digits(complete)?);
    // RFC 9110 §14.4: "A Content-Range field value is invalid if it contains a range-resp
    // that has a last-pos value less than its first-pos value, or a complete-length value
    // less than or equal to its last-pos value."
    (first <= last && last < complete).then_some((ByteRange { first, last }, complete))
}

/// Whether a 206 may be stored as partial content: it would be storable as a 200, it
/// carries one Content-Range of a known complete length, and a validator to combine it by.
///
/// RFC 9111 §3.3: "A cache MUST NOT store incomplete or partial-content responses if it does
/// not support the Range and Content-Range header fields or if it does not understand the
/// range units used in those fields." It is kept per Vary variant, as a 200 would be; never
/// with `Vary: *`, which no later request matches (RFC 9111 §4.1).
pub fn partial_storable(
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    targets: &[HeaderName],
) -> bool {
    status == StatusCode::PARTIAL_CONTENT
        && vary_names(response).is_some()
        && content_range(response).is_some()
        && strong_validator(response)
        && is_storable(&Method::GET, request, StatusCode::OK, response, targets)
}

/// Whether the response has a validator strong enough to combine ranges by: a strong ETag,
/// or without an ETag a Last-Modified at least 60 seconds before its Date (RFC 9110 §8.8.2.2).
fn strong_validator(response: &HeaderMap) -> bool {
    if response.contains_key(header::ETAG) {
        return strong_tag(response).is_some();
    }
    match (
        date(response, header::LAST_MODIFIED),
        date(response, header::DATE),
    ) {
        (Some(modified), Some(dated)) => modified + Duration::from_secs(60) <= dated,
        _ => false,
    }
}

/// Whether stored and new partial content are of the same representation, so that they may
/// be combined (RFC 9111 §3.4): "A cache MAY combine these ranges into a single stored
/// response, and reuse that response to satisfy later requests, if they all share the same
/// strong validator". A strong ETag must match exactly; without ETags, Last-Modified must.
pub fn same_strong_validator(stored: &HeaderMap, new: &HeaderMap) -> bool {
    if !strong_validator(stored) || !strong_validator(new) {
        return false;
    }
    match (strong_tag(stored), strong_tag(new)) {
        (Some(old), Some(new)) => old == new,
        (None, None) => {
            date(stored, header::LAST_MODIFIED) == date(new, header::LAST_MODIFIED)
                && stored.contains_key(header::LAST_MODIFIED)
        }
        _ => false,
    }
}

/// A valid strong ETag, as its bytes: two strong tags match by strong comparison (RFC 9110
/// §8.8.3.2) exactly when these are equal.
fn strong_tag(headers: &HeaderMap) -> Option<&[u8]> {
    etag(headers)?;
    let value = headers.get(header::ETAG)?.as_bytes().trim_ascii();
    (!value.starts_with(b"W/")).then_some(value)
}

/// The header fields of partial content as stored: those of the representation, without the
/// fields that described one part (Content-Range, Content-Length).
pub fn partial_head(response: &HeaderMap) -> HeaderMap {
    let mut head = response.clone();
    head.remove(header::CONTENT_RANGE);
    head.remove(header::CONTENT_LENGTH);
    head
}

#[cfg(test)]
mod tests;
