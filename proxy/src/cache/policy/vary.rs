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

/// A request's value for one field, normalized for Vary matching (RFC 9111 §4.1: a cache
/// "MAY normalize both header fields to reduce the number of stored variants"): all field
/// lines form one list, each member trimmed and the members joined by ", ", so that `1,2`,
/// ` 1, 2 ` and two lines `1` and `2` select the same variant. In the fields whose members
/// are case-insensitive and whose order carries no meaning (Accept-Language and
/// Accept-Encoding: their preference is in the weights, RFC 9110 §12.4.2), members are also
/// lowercased, stripped of white space around `;` and `=`, and sorted. Bytes outside visible
/// ASCII and space, and `%`, are percent-encoded so that distinct values never compare equal.
///
/// Commas split members everywhere: a quoted comma (rare in request fields) then only
/// loses its surrounding white space, which never makes two different values equal.
pub(super) fn request_value(req: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut members: Vec<&[u8]> = req
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|member| !member.is_empty())
        .collect();
    if members.is_empty() && !req.contains_key(name) {
        return None;
    }
    let unordered = name == header::ACCEPT_LANGUAGE || name == header::ACCEPT_ENCODING;
    if unordered {
        members.sort_by(|a, b| folded(a).cmp(folded(b)));
    }
    let mut text = String::new();
    for (i, member) in members.iter().enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        if unordered {
            folded(member).for_each(|byte| push_escaped(&mut text, byte));
        } else {
            member
                .iter()
                .for_each(|&byte| push_escaped(&mut text, byte));
        }
    }
    Some(text)
}

fn push_escaped(text: &mut String, byte: u8) {
    if (0x20..=0x7e).contains(&byte) && byte != b'%' {
        text.push(char::from(byte));
    } else {
        text.push_str(&format!("%{byte:02X}"));
    }
}

/// A member of an unordered list field, lowercased and without white space (which may only
/// stand around its `;` and `=`).
fn folded(member: &[u8]) -> impl Iterator<Item = u8> + Clone + '_ {
    member
        .iter()
        .filter(|byte| !matches!(byte, b' ' | b'\t'))
        .map(u8::to_ascii_lowercase)
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
