//! Header rules of a forwarding proxy: hop-by-hop fields, Via, X-Cache and loop detection.

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, VIA};
use http::StatusCode;

/// Whether a field belongs to one connection and is never forwarded (RFC 9110 §7.6.1).
/// Matched on the name's text, which costs less than comparing `HeaderName`s one by one.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "upgrade"
            | "transfer-encoding"
    )
}

/// Removes hop-by-hop fields, including every field named in `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One look at each name present is cheaper than a removal (a hash and a probe) for each
    // hop-by-hop name, and most messages carry one or none of them: nothing is allocated
    // unless Connection names other fields.
    if headers.contains_key(CONNECTION) {
        // `close` and `keep-alive` are the usual options; only other names are fields.
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|option| {
                !option.eq_ignore_ascii_case("close") && !option.eq_ignore_ascii_case("keep-alive")
            })
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    while let Some(name) = headers
        .keys()
        .find(|name| is_hop_by_hop(name.as_str()))
        .cloned()
    {
        headers.remove(name);
    }
}

/// Writes an HTTP/1.1 response head: status line, `headers` as they are, the blank line.
pub fn write_head(out: &mut Vec<u8>, status: StatusCode, headers: &HeaderMap) {
    let reason = match status.as_u16() {
        103 => "Early Hints",
        _ => status.canonical_reason().unwrap_or_default(),
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The Via entry this proxy adds: `1.1 <name> (canopy/<version>)`.
pub fn via_value(visible_name: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "1.1 {visible_name} (canopy/{})",
        env!("CARGO_PKG_VERSION")
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("1.1 canopy"))
}

/// Appends this proxy's Via entry to the existing ones.
pub fn append_via(headers: &mut HeaderMap, via: &HeaderValue) {
    headers.append(VIA, via.clone());
}

/// True when a Via entry names this proxy: the request has been here before.
pub fn is_loop(headers: &HeaderMap, visible_name: &str) -> bool {
    times_seen(headers, visible_name) > 0
}

/// How many Via entries name this proxy. Twice means even going direct came back here.
pub fn times_seen(headers: &HeaderMap, visible_name: &str) -> usize {
    headers
        .get_all(VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter(|entry| entry.split_whitespace().nth(1) == Some(visible_name))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn connection_named_fields_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn every_hop_by_hop_field_goes_and_the_rest_stay() {
        let mut h = HeaderMap::new();
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.append(header::TE, HeaderValue::from_static("trailers"));
        h.append(header::TE, HeaderValue::from_static("deflate"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert("x-named-nowhere", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-named-nowhere"]);
        let untouched = h.clone();
        remove_hop_by_hop(&mut h);
        assert_eq!(h, untouched);
    }

    #[test]
    fn a_via_naming_us_is_a_loop() {
        let mut h = HeaderMap::new();
        h.append(VIA, HeaderValue::from_static("1.1 squid (squid/5.7)"));
        assert!(!is_loop(&h, "edge"));
        append_via(&mut h, &via_value("edge"));
        assert!(is_loop(&h, "edge"));
        assert!(!is_loop(&h, "edg"));
    }
}
