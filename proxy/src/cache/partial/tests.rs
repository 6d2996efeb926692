use std::time::SystemTime;

use http::header::{self, HeaderValue};

use super::*;

fn times() -> StoredTimes {
    StoredTimes {
        request_time: SystemTime::now(),
        response_time: SystemTime::now(),
    }
}

fn response(etag: &str, extra: &[(header::HeaderName, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, HeaderValue::from_str(etag).unwrap());
    headers.insert(
        header::CONTENT_RANGE,
        HeaderValue::from_static("bytes 0-0/1"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1"));
    for (name, value) in extra {
        headers.insert(name, HeaderValue::from_str(value).unwrap());
    }
    headers
}

fn range(first: u64, last: u64) -> ByteRange {
    ByteRange { first, last }
}

const BODY: &[u8] = b"0123456789";

fn add(store: &PartialStore, etag: &str, first: u64, last: u64) -> Added {
    add_with(store, &response(etag, &[]), first, last)
}

fn add_with(store: &PartialStore, headers: &HeaderMap, first: u64, last: u64) -> Added {
    add_variant(store, None, headers, first, last)
}

fn add_variant(
    store: &PartialStore,
    vary: Variant,
    headers: &HeaderMap,
    first: u64,
    last: u64,
) -> Added {
    let piece = Piece {
        key: "k",
        vary,
        headers,
        times: times(),
        range: range(first, last),
        length: 10,
        bytes: Bytes::from_static(&BODY[first as usize..=last as usize]),
    };
    store.add(piece, &[])
}

/// A lookup by a request without fields, which any variant without Vary answers.
fn lookup(store: &PartialStore, key: &str) -> Option<PartialObject> {
    store.lookup(key, &HeaderMap::new())
}

/// RFC 9111 §3.3: "A cache MUST NOT use an incomplete response to answer requests unless
/// the response has been made complete, or the request is partial and specifies a range
/// wholly within the incomplete response."
#[test]
fn a_range_is_answered_only_when_one_held_piece_covers_it() {
    let store = PartialStore::new(1 << 20);
    assert!(matches!(add(&store, "\"a\"", 2, 5), Added::Partial));
    let held = lookup(&store, "k").expect("held");
    assert_eq!(held.bytes(range(2, 5)).unwrap(), "2345");
    assert_eq!(held.bytes(range(3, 4)).unwrap(), "34");
    assert_eq!(held.bytes(range(1, 3)), None);
    assert_eq!(held.bytes(range(4, 6)), None);
    assert_eq!(held.length, 10);
    assert!(!held.headers.contains_key(header::CONTENT_RANGE));
    assert!(!held.headers.contains_key(header::CONTENT_LENGTH));
}

/// RFC 9110 §15.3.7.3: "The combined response content consists of the union of partial
/// content ranges within the new response and all of the matching stored responses. If the
/// union consists of the entire range of the representation, then the client MUST process
/// the combined response as if it were a complete 200 (OK) response".
#[test]
fn ranges_of_one_representation_combine_into_the_whole() {
    let store = PartialStore::new(1 << 20);
    add(&store, "\"a\"", 0, 3);
    add(&store, "\"a\"", 7, 9);
    let held = lookup(&store, "k").unwrap();
    assert_eq!(held.bytes(range(0, 3)).unwrap(), "0123");
    assert_eq!(held.bytes(range(3, 7)), None);
    add(&store, "\"a\"", 4, 5);
    assert_eq!(
        lookup(&store, "k").unwrap().bytes(range(0, 5)).unwrap(),
        "012345"
    );
    match add(&store, "\"a\"", 5, 7) {
        Added::Complete { body, headers, .. } => {
            assert_eq!(body, BODY);
            assert_eq!(headers[header::ETAG], "\"a\"");
        }
        other => panic!("not complete: {other:?}"),
    }
    assert!(lookup(&store, "k").is_none(), "handed over to the store");
}

/// RFC 9111 §3.4: "if they all share the same strong validator"; a 206 of another
/// representation is not combined, and replaces what was held.
#[test]
fn a_206_with_another_validator_replaces_what_is_held() {
    let store = PartialStore::new(1 << 20);
    add(&store, "\"a\"", 0, 4);
    add(&store, "\"b\"", 5, 9);
    let held = lookup(&store, "k").unwrap();
    assert_eq!(held.bytes(range(0, 4)), None);
    assert_eq!(held.bytes(range(5, 9)).unwrap(), "56789");
    assert_eq!(held.headers[header::ETAG], "\"b\"");
}

/// RFC 9111 §3.4: "When combining the new response with one or more stored responses, a
/// cache MUST update the stored response header fields using the header fields provided in
/// the new response, as per Section 3.2." §3.2 keeps Content-Length (and here the part's
/// Content-Range) out of the update.
#[test]
fn combining_updates_the_stored_fields_from_the_new_206() {
    let store = PartialStore::new(1 << 20);
    let first = response(
        "\"a\"",
        &[
            (header::CACHE_CONTROL, "max-age=10"),
            (header::SERVER, "one"),
        ],
    );
    add_with(&store, &first, 0, 1);
    let second = response(
        "\"a\"",
        &[
            (header::CACHE_CONTROL, "max-age=99"),
            (header::CONTENT_RANGE, "bytes 4-5/10"),
        ],
    );
    add_with(&store, &second, 4, 5);
    let held = lookup(&store, "k").unwrap();
    assert_eq!(held.headers[header::CACHE_CONTROL], "max-age=99");
    assert_eq!(
        held.headers[header::SERVER],
        "one",
        "kept where the 206 says nothing"
    );
    assert!(!held.headers.contains_key(header::CONTENT_RANGE));
    assert_eq!(held.bytes(range(0, 1)).unwrap(), "01");
}

#[test]
fn the_oldest_partial_content_is_evicted_past_the_bound() {
    // Room for one variant of 6 bytes, its ETag and the overhead, not two.
    let store = PartialStore::new(16 * (2 * OVERHEAD));
    let headers = response("\"a\"", &[]);
    let piece = |key, length, bytes: Bytes| Piece {
        key,
        vary: None,
        headers: &headers,
        times: times(),
        range: range(0, bytes.len() as u64 - 1),
        length,
        bytes,
    };
    let six = || Bytes::from_static(b"012345");
    store.add(piece("one", 100, six()), &[]);
    store.add(piece("two", 100, six()), &[]);
    assert!(lookup(&store, "one").is_none());
    assert!(lookup(&store, "two").is_some());
    assert!(store.remove("two"));
    assert!(!store.remove("two"));
    let too_large = Bytes::from(vec![0; 2 * OVERHEAD as usize + 1]);
    assert!(matches!(
        store.add(piece("big", 1000, too_large), &[]),
        Added::TooLarge
    ));
}

fn coded(value: &str) -> Variant {
    Some(vec![(header::ACCEPT_ENCODING, Some(value.to_owned()))])
}

fn asking(value: &str) -> HeaderMap {
    let mut request = HeaderMap::new();
    request.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_str(value).unwrap(),
    );
    request
}

/// RFC 9111 §4.1: "the cache MUST NOT use that stored response without revalidation unless
/// all the presented request header fields nominated by that Vary field value match those
/// fields in the original request".
#[test]
fn each_variant_is_held_apart_and_found_only_by_a_matching_request() {
    let store = PartialStore::new(1 << 20);
    let gzip = response(
        "\"g\"",
        &[
            (header::VARY, "accept-encoding"),
            (header::CONTENT_ENCODING, "gzip"),
        ],
    );
    let identity = response("\"i\"", &[(header::VARY, "accept-encoding")]);
    add_variant(&store, coded("gzip"), &gzip, 0, 4);
    add_variant(&store, coded("identity"), &identity, 5, 9);
    let held = store
        .lookup("k", &asking("gzip"))
        .expect("the gzip variant");
    assert_eq!(held.headers[header::ETAG], "\"g\"");
    assert!(held.bytes(range(0, 4)).is_some());
    let held = store
        .lookup("k", &asking("identity"))
        .expect("the identity one");
    assert_eq!(held.headers[header::ETAG], "\"i\"");
    assert!(held.bytes(range(0, 4)).is_none());
    assert!(store.lookup("k", &asking("br")).is_none());
    assert!(
        lookup(&store, "k").is_none(),
        "no Accept-Encoding: no variant"
    );
    match add_variant(&store, coded("gzip"), &gzip, 5, 9) {
        Added::Complete { vary, headers, .. } => {
            assert_eq!(vary, coded("gzip"), "completed as its variant");
            assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
        }
        other => panic!("not complete: {other:?}"),
    }
    assert!(store.lookup("k", &asking("identity")).is_some());
    assert!(store.remove("k"));
    assert!(store.lookup("k", &asking("identity")).is_none());
}

/// As in the store: content without Vary answers every request, so it replaces every
/// variant held; content with Vary replaces content held without.
#[test]
fn content_without_vary_replaces_every_variant_and_with_vary_the_one_without() {
    let store = PartialStore::new(1 << 20);
    let varied = response("\"a\"", &[(header::VARY, "accept-encoding")]);
    add_variant(&store, coded("gzip"), &varied, 0, 1);
    add_variant(&store, coded("br"), &varied, 0, 1);
    add(&store, "\"a\"", 2, 3);
    assert!(store
        .lookup("k", &asking("gzip"))
        .unwrap()
        .bytes(range(0, 1))
        .is_none());
    assert!(store
        .lookup("k", &asking("br"))
        .unwrap()
        .bytes(range(2, 3))
        .is_some());
    add_variant(&store, coded("gzip"), &varied, 4, 5);
    assert!(
        store.lookup("k", &asking("br")).is_none(),
        "the Vary-less one replaced"
    );
    assert!(store.lookup("k", &asking("gzip")).is_some());
}

/// Pieces under one strong ETag but in two content codings are not one representation's
/// bytes: the newer replaces the held one.
#[test]
fn pieces_in_another_content_coding_are_not_combined() {
    let store = PartialStore::new(1 << 20);
    add(&store, "\"a\"", 0, 4);
    let gzip = response("\"a\"", &[(header::CONTENT_ENCODING, "gzip")]);
    assert!(matches!(add_with(&store, &gzip, 5, 9), Added::Partial));
    let held = lookup(&store, "k").unwrap();
    assert!(held.bytes(range(0, 4)).is_none());
    assert_eq!(held.headers[header::CONTENT_ENCODING], "gzip");
}
