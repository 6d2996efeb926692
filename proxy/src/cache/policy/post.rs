//! A POST response kept for later GETs (RFC 9110 §9.3.3, §8.7; RFC 9111 §4): only when it
//! says it is the current representation of the very resource that was posted to.

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode, Uri};

use super::cache_control::CacheControl;
use super::storable::is_storable;

/// Whether a response to a POST of `target` may be stored as the response to a GET of it.
///
/// RFC 9110 §9.3.3: "Responses to POST requests are only cacheable when they include explicit
/// freshness information (see Section 4.2.1 of [CACHING]) and a Content-Location header field
/// that has the same value as the POST's target URI (Section 8.7). A cached POST response can
/// be reused to satisfy a later GET or HEAD request." Choices: only a 200, the one status
/// whose content means the same to a GET; otherwise as storable as the response to a GET
/// would be (`no-store`, `private`, Authorization, `Vary: *` refuse it).
pub fn post_reusable_for_get(
    target: &Uri,
    req: &HeaderMap,
    status: StatusCode,
    resp: &HeaderMap,
    targets: &[HeaderName],
) -> bool {
    if status != StatusCode::OK || !names_target(target, resp) {
        return false;
    }
    let response = CacheControl::parse_response(resp, targets);
    let explicit = response.s_maxage.is_some()
        || response.max_age.is_some()
        || !response.targeted && resp.contains_key(header::EXPIRES);
    explicit && is_storable(&Method::GET, req, status, resp, targets)
}

/// Whether the response's one Content-Location, resolved against `target` (RFC 9110 §8.7:
/// "If Content-Location is included in a 2xx (Successful) response message and its value
/// refers (after conversion to absolute form) to a URI that is the same as the target URI"),
/// is `target`: scheme and host compared without case, the rest exactly. An empty value,
/// which would resolve to the target too, is more likely a server's slip than a statement.
fn names_target(target: &Uri, resp: &HeaderMap) -> bool {
    let mut lines = resp.get_all(header::CONTENT_LOCATION).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return false;
    };
    let reference = line.to_str().map(str::trim).unwrap_or_default();
    let Some(resolved) = resolve(target, reference).filter(|_| !reference.is_empty()) else {
        return false;
    };
    let same = |a: Option<&str>, b: Option<&str>| match (a, b) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    };
    same(resolved.scheme_str(), target.scheme_str())
        && same(
            resolved.authority().map(|a| a.as_str()),
            target.authority().map(|a| a.as_str()),
        )
        && resolved.path_and_query().map(|p| p.as_str())
            == target.path_and_query().map(|p| p.as_str())
}

/// A URI reference resolved against an absolute `base` (RFC 3986 §5.2), for the forms a
/// Content-Location takes: absolute, network-path, absolute-path, relative-path, or a query
/// alone. `None` for a fragment or anything that does not parse.
fn resolve(base: &Uri, reference: &str) -> Option<Uri> {
    if reference.contains('#') {
        return None;
    }
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    let has_scheme = reference
        .split_once(':')
        .is_some_and(|(s, _)| !s.is_empty() && !s.contains('/') && !s.contains('?'));
    let absolute = if has_scheme {
        reference.to_owned()
    } else if reference.starts_with("//") {
        format!("{scheme}:{reference}")
    } else {
        let (path, query) = match reference.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (reference, None),
        };
        let path = if path.is_empty() {
            base.path().to_owned()
        } else if path.starts_with('/') {
            remove_dot_segments(path)
        } else {
            let base_path = base.path();
            let directory = &base_path[..base_path.rfind('/').map_or(0, |at| at + 1)];
            remove_dot_segments(&format!("{directory}{path}"))
        };
        let query = match query {
            Some(query) => Some(query),
            None if reference.is_empty() => base.query(),
            None => None,
        };
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        match query {
            Some(query) => format!("{scheme}://{authority}{path}?{query}"),
            None => format!("{scheme}://{authority}{path}"),
        }
    };
    absolute.parse().ok()
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    for (at, segment) in segments.iter().enumerate() {
        let last = at + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            segment => out.push(segment),
        }
    }
    out.join("/")
}
