//! Cache-Control directives of requests and responses, parsed once (RFC 9111 §5.2, RFC 5861,
//! RFC 8246), or for a response those of a targeted field (RFC 9213).

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName};

use super::delta_seconds;
use super::targeted::governing;

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
    /// The directives come from a targeted field (RFC 9213), so the response's Cache-Control
    /// and Expires do not count.
    pub targeted: bool,
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

    /// The directives that govern a response for this cache: those of the first field of its
    /// target list with a valid, non-empty value, else its Cache-Control (RFC 9213 §2.2).
    pub fn parse_response(headers: &HeaderMap, targets: &[HeaderName]) -> Self {
        if targets.is_empty() {
            return Self::parse(headers);
        }
        governing(headers, targets).unwrap_or_else(|| Self::parse(headers))
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

    pub(super) fn apply(&mut self, name: &str, arg: Option<&str>) {
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
    pub(super) fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some()
    }
}

pub(super) fn keep_first(slot: &mut Option<Duration>, value: Option<Duration>) {
    if slot.is_none() {
        *slot = value;
    }
}

pub(super) fn qualify(arg: Option<&str>, whole: &mut bool, fields: &mut Vec<HeaderName>) {
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
pub(super) fn directives(value: &[u8]) -> Vec<(String, Option<String>)> {
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
