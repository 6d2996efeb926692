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
    let mut text = String::new();
    // Every byte given is visible ASCII or space: escaped, never split.
    normalize(req, name, &mut |byte| text.push(char::from(byte))).then_some(text)
}

/// Whether a request's normalized value for one field is `stored` ([`request_value`]), compared
/// byte by byte as it is normalized: a hit on a Vary'd response builds no string.
fn request_value_is(req: &HeaderMap, name: &HeaderName, stored: Option<&str>) -> bool {
    let Some(stored) = stored else {
        return !req.contains_key(name);
    };
    let mut expected = stored.bytes();
    let mut same = true;
    let present = normalize(req, name, &mut |byte| same &= expected.next() == Some(byte));
    present && same && expected.next().is_none()
}

/// The members a field's value is normalized with when they fit, kept on the stack.
const MEMBERS_ON_STACK: usize = 16;

/// Gives `out` the bytes of [`request_value`], one at a time; false when the request has no
/// such field.
fn normalize(req: &HeaderMap, name: &HeaderName, out: &mut impl FnMut(u8)) -> bool {
    let lines = req.get_all(name);
    let mut members = lines
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|member| !member.is_empty());
    if lines.iter().next().is_none() {
        return false;
    }
    let unordered = name == header::ACCEPT_LANGUAGE || name == header::ACCEPT_ENCODING;
    if !unordered {
        for (i, member) in members.enumerate() {
            if i > 0 {
                b", ".iter().for_each(|&byte| out(byte));
            }
            member.iter().for_each(|&byte| push_escaped(out, byte));
        }
        return true;
    }
    let mut on_stack = [&[][..]; MEMBERS_ON_STACK];
    let mut held = 0;
    let mut more = Vec::new();
    for member in members.by_ref() {
        if held == MEMBERS_ON_STACK {
            more.extend_from_slice(&on_stack);
            more.push(member);
            more.extend(members.by_ref());
            break;
        }
        on_stack[held] = member;
        held += 1;
    }
    let sorted = if more.is_empty() {
        &mut on_stack[..held]
    } else {
        &mut more[..]
    };
    // Members that fold alike give the same bytes, so their order among themselves is moot.
    sorted.sort_unstable_by(|a, b| folded(a).cmp(folded(b)));
    for (i, member) in sorted.iter().enumerate() {
        if i > 0 {
            b", ".iter().for_each(|&byte| out(byte));
        }
        folded(member).for_each(|byte| push_escaped(out, byte));
    }
    true
}

fn push_escaped(out: &mut impl FnMut(u8), byte: u8) {
    if (0x20..=0x7e).contains(&byte) && byte != b'%' {
        out(byte);
    } else {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        out(b'%');
        out(HEX[usize::from(byte >> 4)]);
        out(HEX[usize::from(byte & 0xf)]);
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
        .all(|(name, value)| request_value_is(req, name, value.as_deref()))
}

#[cfg(test)]
mod tests;
