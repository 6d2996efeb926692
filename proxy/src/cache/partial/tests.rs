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
    let bytes = Bytes::from_static(&BODY[first as usize..=last as usize]);
    store.add(("k", headers), times(), range(first, last), 10, bytes, &[])
}

/// RFC 9111 §3.3: "A cache MUST NOT use an incomplete response to answer requests unless
/// the response has been made complete, or the request is partial and specifies a range
/// wholly within the incomplete response."
#[test]
fn a_range_is_answered_only_when_one_held_piece_covers_it() {
    let store = PartialStore::new(1 << 20);
    assert!(matches!(add(&store, "\"a\"", 2, 5), Added::Partial));
    let held = store.lookup("k").expect("held");
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
    let held = store.lookup("k").unwrap();
    assert_eq!(held.bytes(range(0, 3)).unwrap(), "0123");
    assert_eq!(held.bytes(range(3, 7)), None);
    add(&store, "\"a\"", 4, 5);
    assert_eq!(
        store.lookup("k").unwrap().bytes(range(0, 5)).unwrap(),
        "012345"
    );
    match add(&store, "\"a\"", 5, 7) {
        Added::Complete { body, headers, .. } => {
            assert_eq!(body, BODY);
            assert_eq!(headers[header::ETAG], "\"a\"");
        }
        other => panic!("not complete: {other:?}"),
    }
    assert!(store.lookup("k").is_none(), "handed over to the store");
}

/// RFC 9111 §3.4: "if they all share the same strong validator"; a 206 of another
/// representation is not combined, and replaces what was held.
#[test]
fn a_206_with_another_validator_replaces_what_is_held() {
    let store = PartialStore::new(1 << 20);
    add(&store, "\"a\"", 0, 4);
    add(&store, "\"b\"", 5, 9);
    let held = store.lookup("k").unwrap();
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
    let held = store.lookup("k").unwrap();
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
    let store = PartialStore::new(16 * 8);
    let piece = |key: &str| {
        let headers = response("\"a\"", &[]);
        store.add(
            (key, &headers),
            times(),
            range(0, 5),
            100,
            Bytes::from_static(b"012345"),
            &[],
        )
    };
    piece("one");
    piece("two");
    assert!(store.lookup("one").is_none());
    assert!(store.lookup("two").is_some());
    assert!(store.remove("two"));
    assert!(!store.remove("two"));
    let too_large = Bytes::from(vec![0; 9]);
    let headers = response("\"a\"", &[]);
    assert!(matches!(
        store.add(("big", &headers), times(), range(0, 8), 100, too_large, &[]),
        Added::TooLarge
    ));
}
