use super::*;

fn headers(fields: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        map.append(
            header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn asked(range: &str, length: u64) -> RangeAnswer {
    match range_specs(&headers(&[("range", range)])) {
        Some(specs) => answer(&specs, length),
        None => RangeAnswer::Whole,
    }
}

fn bytes(first: u64, last: u64) -> ByteRange {
    ByteRange { first, last }
}

/// RFC 9110 §14.1.2: "bytes=0-499" the first 500 bytes, "bytes=9500-" and "bytes=-500" the
/// final 500 bytes of a 10000-byte representation.
#[test]
fn first_last_prefix_and_suffix_ranges_select_the_bytes_the_rfc_names() {
    let part = |first, last| RangeAnswer::Partial(vec![bytes(first, last)]);
    assert_eq!(asked("bytes=0-499", 10_000), part(0, 499));
    assert_eq!(asked("bytes=500-999", 10_000), part(500, 999));
    assert_eq!(asked("bytes=9500-", 10_000), part(9500, 9999));
    assert_eq!(asked("bytes=-500", 10_000), part(9500, 9999));
    assert_eq!(asked("bytes= 9500 - ", 10_000), part(9500, 9999));
    // "If the last-pos value is absent, or if the value is greater than or equal to the
    // current length of the representation data, the byte range is interpreted as the
    // remainder of the representation".
    assert_eq!(asked("bytes=9500-20000", 10_000), part(9500, 9999));
}

/// RFC 9110 §14.1.2: "If the selected representation is shorter than the specified
/// suffix-length, the entire representation is used." A range that covers the whole is
/// answered with 200.
#[test]
fn a_suffix_longer_than_the_representation_is_the_whole() {
    assert_eq!(asked("bytes=-500", 100), RangeAnswer::Whole);
    assert_eq!(asked("bytes=0-", 100), RangeAnswer::Whole);
}

/// RFC 9110 §14.1.2: a range-spec is satisfiable if it is "an int-range with a first-pos that
/// is less than the current length of the selected representation or a suffix-range with a
/// non-zero suffix-length"; §15.5.17: 416 when none is.
#[test]
fn ranges_past_the_end_and_empty_suffixes_are_unsatisfiable() {
    assert_eq!(asked("bytes=100-", 100), RangeAnswer::Unsatisfiable);
    assert_eq!(asked("bytes=200-300", 100), RangeAnswer::Unsatisfiable);
    assert_eq!(asked("bytes=-0", 100), RangeAnswer::Unsatisfiable);
    assert_eq!(
        asked("bytes=200-300, 5-9", 100),
        RangeAnswer::Partial(vec![bytes(5, 9)])
    );
}

/// RFC 9110 §14.1.1: "A byte-range-spec is invalid if the last-pos value is present and less
/// than the first-pos." §14.2: "A proxy MAY discard a Range header field that contains a
/// range unit it does not understand."
#[test]
fn invalid_specs_and_other_units_are_ignored() {
    for range in [
        "bytes=5-1",
        "items=0-5",
        "bytes=a-b",
        "bytes=",
        "bytes=1-2-3",
        "0-5",
        "bytes=--5",
    ] {
        assert_eq!(range_specs(&headers(&[("range", range)])), None, "{range}");
    }
    let two_lines = headers(&[("range", "bytes=0-1"), ("range", "bytes=3-4")]);
    assert_eq!(range_specs(&two_lines), None);
}

/// RFC 9110 §14.6: "When multiple ranges are requested, a server MAY coalesce any of the
/// ranges that overlap, or that are separated by a gap that is smaller than the overhead of
/// sending multiple parts, regardless of the order in which the corresponding range-spec
/// appeared in the received Range header field."
#[test]
fn several_ranges_are_sorted_and_overlapping_or_close_ones_coalesced() {
    assert_eq!(
        asked("bytes=5000-5999, 0-99", 10_000),
        RangeAnswer::Partial(vec![bytes(0, 99), bytes(5000, 5999)])
    );
    assert_eq!(
        asked("bytes=0-99, 50-199, 210-299", 10_000),
        RangeAnswer::Partial(vec![bytes(0, 299)])
    );
}

/// RFC 9110 §14.2: a server "MAY ignore or reject a Range header field that contains ... a
/// set of many small ranges that are not listed in ascending order, since these are
/// indications of either a broken client or a deliberate denial-of-service attack".
#[test]
fn too_many_ranges_are_served_whole() {
    let many: Vec<String> = (0..=MAX_RANGES as u64)
        .rev()
        .map(|i| format!("{}-{}", i * 1000, i * 1000 + 1))
        .collect();
    let range = format!("bytes={}", many.join(","));
    assert_eq!(asked(&range, 1 << 20), RangeAnswer::Whole);
}

#[test]
fn the_first_offset_is_known_without_the_length_unless_a_suffix_is_asked_for() {
    let offset = |range: &str| first_offset(&range_specs(&headers(&[("range", range)])).unwrap());
    assert_eq!(offset("bytes=500-999, 100-"), Some(100));
    assert_eq!(offset("bytes=-100"), None);
    assert_eq!(offset("bytes=-100, 0-5"), None);
}

/// RFC 9110 §14.2: "A server MUST ignore a Range header field received with a request method
/// that is unrecognized or for which range handling is not defined. For this specification,
/// GET is the only method for which range handling is defined."
#[test]
fn range_applies_to_get_only() {
    let request = headers(&[("range", "bytes=0-1")]);
    assert!(range_applies(&Method::GET, &request, &HeaderMap::new()));
    assert!(!range_applies(&Method::HEAD, &request, &HeaderMap::new()));
    assert!(!range_applies(&Method::POST, &request, &HeaderMap::new()));
}

/// RFC 9110 §13.1.5: "If the entity-tag validator provided exactly matches the ETag field
/// value for the selected representation using the strong comparison function (Section
/// 8.8.3.2), the condition is true." A weak tag on either side never matches strongly.
#[test]
fn if_range_with_an_entity_tag_holds_on_a_strong_match_only() {
    let stored = headers(&[("etag", "\"v1\"")]);
    let if_range = |value: &str| headers(&[("range", "bytes=0-1"), ("if-range", value)]);
    assert!(if_range_holds(&if_range("\"v1\""), &stored));
    assert!(!if_range_holds(&if_range("\"v2\""), &stored));
    assert!(!if_range_holds(&if_range("W/\"v1\""), &stored));
    let weak = headers(&[("etag", "W/\"v1\"")]);
    assert!(!if_range_holds(&if_range("\"v1\""), &weak));
    assert!(!if_range_holds(&if_range("\"v1\""), &HeaderMap::new()));
    assert!(if_range_holds(&headers(&[("range", "bytes=0-1")]), &stored));
}

/// RFC 9110 §13.1.5: "If the HTTP-date validator provided is not a strong validator in the
/// sense defined by Section 8.8.2.2, the condition is false." and "If the HTTP-date validator
/// provided exactly matches the Last-Modified field value for the selected representation,
/// the condition is true." §8.8.2.2: an intermediate cache's entry "includes a Date value,
/// and the presented Last-Modified time is at least 60 seconds before the Date value."
#[test]
fn if_range_with_a_date_holds_when_it_is_the_strong_last_modified() {
    let modified = "Sun, 29 Nov 2026 05:00:00 GMT";
    let if_range = headers(&[("range", "bytes=0-1"), ("if-range", modified)]);
    let stored = |date: &str| headers(&[("last-modified", modified), ("date", date)]);
    assert!(if_range_holds(
        &if_range,
        &stored("Sun, 29 Nov 2026 05:01:00 GMT")
    ));
    assert!(!if_range_holds(
        &if_range,
        &stored("Sun, 29 Nov 2026 05:00:30 GMT")
    ));
    let other = headers(&[
        ("range", "bytes=0-1"),
        ("if-range", "Sun, 29 Nov 2026 04:00:00 GMT"),
    ]);
    assert!(!if_range_holds(
        &other,
        &stored("Sun, 29 Nov 2026 06:00:00 GMT")
    ));
}

/// RFC 9110 §14.4: "A Content-Range field value is invalid if it contains a range-resp that
/// has a last-pos value less than its first-pos value, or a complete-length value less than
/// or equal to its last-pos value."
#[test]
fn content_range_is_read_only_when_valid_and_complete() {
    let read = |value: &str| content_range(&headers(&[("content-range", value)]));
    assert_eq!(read("bytes 0-499/1234"), Some((bytes(0, 499), 1234)));
    assert_eq!(read("bytes 500-400/1234"), None);
    assert_eq!(read("bytes 0-1234/1234"), None);
    assert_eq!(read("bytes 0-499/*"), None);
    assert_eq!(read("bytes */1234"), None);
    assert_eq!(read("items 0-1/2"), None);
}

/// RFC 9111 §3.3: "A cache MUST NOT store incomplete or partial-content responses if it does
/// not support the Range and Content-Range header fields or if it does not understand the
/// range units used in those fields." Stored here only with a validator to combine by.
#[test]
fn a_206_is_stored_with_a_byte_content_range_and_a_strong_validator() {
    let partial = |extra: &[(&str, &str)]| {
        let mut fields = vec![
            ("content-range", "bytes 0-9/100"),
            ("cache-control", "max-age=60"),
        ];
        fields.extend_from_slice(extra);
        headers(&fields)
    };
    let request = HeaderMap::new();
    let storable = |h: &HeaderMap| partial_storable(&request, StatusCode::PARTIAL_CONTENT, h, &[]);
    assert!(storable(&partial(&[("etag", "\"a\"")])));
    assert!(!storable(&partial(&[("etag", "W/\"a\"")])));
    assert!(!storable(&partial(&[])));
    assert!(!storable(&partial(&[
        ("etag", "\"a\""),
        ("cache-control", "no-store")
    ])));
    assert!(!storable(&partial(&[
        ("etag", "\"a\""),
        ("cache-control", "private")
    ])));
    let items = headers(&[
        ("content-range", "items 0-9/100"),
        ("etag", "\"a\""),
        ("cache-control", "max-age=60"),
    ]);
    assert!(!storable(&items));
    assert!(!partial_storable(
        &request,
        StatusCode::OK,
        &partial(&[("etag", "\"a\"")]),
        &[]
    ));
}

/// RFC 9111 §4.1: "A stored response with a Vary header field value containing a member
/// "*" always fails to match." Other Vary'd partial content is kept per variant, coded or
/// not, as a 200 would be.
#[test]
fn a_206_with_vary_is_stored_as_its_variant_unless_vary_is_a_star() {
    let partial = |extra: &[(&str, &str)]| {
        let mut fields = vec![
            ("content-range", "bytes 0-9/100"),
            ("cache-control", "max-age=60"),
            ("etag", "\"a\""),
        ];
        fields.extend_from_slice(extra);
        headers(&fields)
    };
    let request = HeaderMap::new();
    let storable = |h: &HeaderMap| partial_storable(&request, StatusCode::PARTIAL_CONTENT, h, &[]);
    assert!(storable(&partial(&[("vary", "accept-encoding")])));
    assert!(storable(&partial(&[
        ("vary", "accept-encoding"),
        ("content-encoding", "gzip")
    ])));
    assert!(!storable(&partial(&[("vary", "accept-encoding, *")])));
}

/// RFC 9111 §3.5: "A shared cache MUST NOT use a cached response to a request with an
/// Authorization header field [...] unless the response contains a Cache-Control field with
/// a response directive [...] that allows it to be stored by a shared cache". Partial
/// content follows the rule of a complete response.
#[test]
fn a_206_to_a_request_with_authorization_is_stored_only_when_shared() {
    let request = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
    let partial = |cache_control: &str| {
        headers(&[
            ("content-range", "bytes 0-9/100"),
            ("cache-control", cache_control),
            ("etag", "\"a\""),
        ])
    };
    let storable = |h: &HeaderMap| partial_storable(&request, StatusCode::PARTIAL_CONTENT, h, &[]);
    assert!(!storable(&partial("max-age=60")));
    assert!(storable(&partial("public, max-age=60")));
    assert!(storable(&partial("s-maxage=60")));
    assert!(storable(&partial("max-age=60, must-revalidate")));
}

/// RFC 9111 §3.4: "A cache MAY combine these ranges into a single stored response, and reuse
/// that response to satisfy later requests, if they all share the same strong validator".
#[test]
fn ranges_combine_only_under_the_same_strong_validator() {
    let tagged = |tag: &str| headers(&[("etag", tag)]);
    assert!(same_strong_validator(&tagged("\"a\""), &tagged("\"a\"")));
    assert!(!same_strong_validator(&tagged("\"a\""), &tagged("\"b\"")));
    assert!(!same_strong_validator(
        &tagged("W/\"a\""),
        &tagged("W/\"a\"")
    ));
    let dated = |modified: &str| {
        headers(&[
            ("last-modified", modified),
            ("date", "Sun, 29 Nov 2026 06:00:00 GMT"),
        ])
    };
    let old = "Sun, 29 Nov 2026 05:00:00 GMT";
    assert!(same_strong_validator(&dated(old), &dated(old)));
    assert!(!same_strong_validator(
        &dated(old),
        &dated("Sun, 29 Nov 2026 05:30:00 GMT")
    ));
    assert!(!same_strong_validator(&tagged("\"a\""), &dated(old)));
}

#[test]
fn the_stored_head_of_partial_content_drops_the_part_s_framing() {
    let head = partial_head(&headers(&[
        ("content-range", "bytes 0-9/100"),
        ("content-length", "10"),
        ("etag", "\"a\""),
    ]));
    assert_eq!(head.len(), 1);
    assert_eq!(head[header::ETAG], "\"a\"");
}
