//! What may be stored, which fields never are, and what an unsafe request invalidates
//! (RFC 9111 §3, §4.4).

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode};

use super::cache_control::CacheControl;
use super::freshness::heuristically_cacheable;
use super::vary::vary_names;

/// Status codes whose caching rules this cache implements, for `must-understand`
/// (RFC 9111 §5.2.2.3): the final codes of RFC 9110 except 206 and 304, never stored here.
pub(super) fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=303 | 305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// Whether a shared cache may store this response to this request (RFC 9111 §3).
///
/// Only GET is stored; HEAD is answered from a stored GET by the caller. 206 and 304 are
/// never stored. `no-cache` does not prevent storing. A response with `Vary: *` is not stored,
/// because it could never be reused (§4.1). With `must-understand`, `no-store` is ignored
/// for an understood status and the response is refused for any other (§5.2.2.3). The
/// response's directives are those of the governing field of `targets`, if any (RFC 9213).
pub fn is_storable(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    resp: &HeaderMap,
    targets: &[HeaderName],
) -> bool {
    let code = status.as_u16();
    if method != Method::GET || !(200..600).contains(&code) || code == 206 || code == 304 {
        return false;
    }
    // The response's refusals first: an uncacheable response then costs no more parsing.
    let response = CacheControl::parse_response(resp, targets);
    let refused_by_directive = if response.must_understand {
        !understood(status)
    } else {
        response.no_store
    };
    if refused_by_directive || response.private || vary_names(resp).is_none() {
        return false;
    }
    if CacheControl::parse(req).no_store {
        return false;
    }
    if req.contains_key(header::AUTHORIZATION) && !shared_with_credentials(&response) {
        return false;
    }
    let expires = !response.targeted && resp.contains_key(header::EXPIRES);
    response.public
        || response.max_age.is_some()
        || response.s_maxage.is_some()
        || expires
        || heuristically_cacheable(status)
}

/// Whether a response may be stored and reused although its request carried Authorization
/// (RFC 9111 §3.5): `public`, `must-revalidate` or `s-maxage` says so.
pub(super) fn shared_with_credentials(response: &CacheControl) -> bool {
    response.public || response.must_revalidate || response.s_maxage.is_some()
}

/// Whether a stored response may answer a request that carries Authorization. It was
/// stored either from a request without credentials, or by [`is_storable`]'s §3.5 rule; in
/// both cases only a response that says it is shared with `public`, `must-revalidate` or
/// `s-maxage` is taken to be the same for an authenticated client: an origin that did not
/// say so may answer an authenticated client differently from everyone else.
pub fn answers_credentials(resp: &HeaderMap, targets: &[HeaderName]) -> bool {
    shared_with_credentials(&CacheControl::parse_response(resp, targets))
}

/// Fields the origin meant for the one client whose request it answered: the cookies it sets.
///
/// RFC 9111 §3 lets a shared cache store and reuse a response that carries Set-Cookie.
/// Canopy stores such a response, as Squid does, but never these fields: the client whose
/// request fetched it gets them, no other client ever does (not from the store, not while
/// waiting on the same fetch). Squid removes Set-Cookie from every hit for the same reason;
/// Varnish and nginx do not store such responses at all, which costs the hit for everyone.
pub const FOR_ONE_CLIENT: [HeaderName; 2] =
    [header::SET_COOKIE, HeaderName::from_static("set-cookie2")];

/// Fields to remove before storing: [`FOR_ONE_CLIENT`], those named by `private="..."` (a
/// shared cache must not store them, RFC 9111 §5.2.2.7) and by `no-cache="..."` (they must
/// not be reused without revalidation, §5.2.2.4; not storing them is the simplest way never
/// to reuse them). The qualified forms count in Cache-Control and in the governing field of
/// `targets` alike (RFC 9213), erring on storing less.
pub fn fields_to_strip(resp: &HeaderMap, targets: &[HeaderName]) -> Vec<HeaderName> {
    let cc = CacheControl::parse(resp);
    let targeted = CacheControl::parse_response(resp, targets);
    let mut fields = FOR_ONE_CLIENT.to_vec();
    let named = (cc.private_fields.into_iter().chain(cc.no_cache_fields))
        .chain(targeted.private_fields)
        .chain(targeted.no_cache_fields);
    for name in named {
        if !fields.contains(&name) {
            fields.push(name);
        }
    }
    fields
}

/// Whether this response invalidates the stored responses of its target URI (RFC 9111 §4.4):
/// an unsafe method, including unknown ones, answered with 2xx or 3xx. The caller also
/// invalidates the same-origin Location and Content-Location URIs.
pub fn invalidates(method: &Method, status: StatusCode) -> bool {
    let safe = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE].contains(method);
    !safe && (status.is_success() || status.is_redirection())
}
