//! The one pass over a request's fields gives what looking each field up gives.

use super::*;
use proptest::prelude::*;

const FIELDS: [HeaderName; 10] = [
    header::CACHE_CONTROL,
    header::PRAGMA,
    header::AUTHORIZATION,
    header::RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::HOST,
    header::VIA,
    header::ETAG,
    header::LAST_MODIFIED,
];

fn field_bytes() -> impl Strategy<Value = Vec<u8>> {
    let meaningful = prop::sample::select(vec![
        "no-cache",
        "max-age=0, only-if-cached",
        "bytes=0-1",
        "\"a\"",
        "W/\"a\", \"b\"",
        "*",
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Basic a",
    ])
    .prop_map(|text| text.as_bytes().to_vec());
    let interesting = prop::sample::select(b"no-cahe,=\"* W/0123456789".to_vec());
    prop_oneof![meaningful, prop::collection::vec(interesting, 0..24)]
}

fn fields() -> impl Strategy<Value = Vec<(usize, Vec<u8>)>> {
    prop::collection::vec((0..FIELDS.len(), field_bytes()), 0..8)
}

fn map(fields: &[(usize, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, bytes) in fields {
        if let Ok(value) = HeaderValue::from_bytes(bytes) {
            map.append(FIELDS[*name].clone(), value);
        }
    }
    map
}

proptest! {
    #[test]
    fn asks_agrees_with_each_lookup(request in fields(), stored in fields(), head in any::<bool>()) {
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = if head { Method::HEAD } else { Method::GET };
        parts.headers = map(&request);
        let (headers, stored) = (&parts.headers, map(&stored));
        let asks = Asks::of(headers);
        prop_assert_eq!(asks.directives(headers), CacheControl::parse_request(headers));
        prop_assert_eq!(asks.range_of(&parts), ranges::asks_for_range(&parts));
        prop_assert_eq!(asks.range, headers.contains_key(header::RANGE));
        prop_assert_eq!(asks.authorization, headers.contains_key(header::AUTHORIZATION));
        let plain = !headers.contains_key(header::CACHE_CONTROL)
            && !headers.contains_key(header::PRAGMA)
            && !headers.contains_key(header::AUTHORIZATION);
        prop_assert_eq!(!asks.directives && !asks.authorization, plain);
        if !asks.conditional {
            prop_assert!(!policy::client_not_modified(headers, &stored));
        }
    }
}

#[test]
fn a_request_with_no_such_field_asks_nothing() {
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("example.com"));
    headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    assert_eq!(Asks::of(&headers), Asks::default());
    headers.insert(header::IF_MODIFIED_SINCE, HeaderValue::from_static("x"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    let asks = Asks::of(&headers);
    assert!(asks.conditional && asks.directives && !asks.range && !asks.authorization);
}
