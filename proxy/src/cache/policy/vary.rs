//! The secondary cache key that Vary names, and whether a request selects a stored
//! response by it (RFC 9111 §4.1).

use http::header::{self, HeaderMap, HeaderName};

use super::list_members;

/// The field names in all Vary fields, lowercased and deduplicated; `None` for `Vary: *`.
pub(super) fn vary_names(resp: &HeaderMap) -> Option<Vec<HeaderName>> {
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
pub(super) fn request_value(req: &HeaderMap, name: &HeaderName) -> Option<String> {
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
