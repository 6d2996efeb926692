use super::*;
use proptest::prelude::*;
use std::time::UNIX_EPOCH;

use http::header::{self, HeaderValue};
use http::{Method, StatusCode};

/// A fixed instant: Tue, 14 Nov 2023 22:13:20 GMT.
const T0: u64 = 1_700_000_000;
/// The RFC examples' instant: Sun, 06 Nov 1994 08:49:37 GMT.
const RFC_EXAMPLE: u64 = 784_111_777;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn http_date(secs: u64) -> String {
    httpdate::fmt_http_date(at(secs))
}

fn headers(fields: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("test field name"),
            HeaderValue::from_str(value).expect("test field value"),
        );
    }
    map
}

/// A response generated, requested and received at T0, with the given fields.
fn response(fields: &[(&str, &str)]) -> HeaderMap {
    let mut map = headers(fields);
    if !map.contains_key(header::DATE) {
        map.insert(
            header::DATE,
            HeaderValue::from_str(&http_date(T0)).expect("date"),
        );
    }
    map
}

fn times_at_t0() -> StoredTimes {
    StoredTimes {
        request_time: at(T0),
        response_time: at(T0),
    }
}

fn lifetime(status: u16, resp: &HeaderMap) -> Duration {
    let status = StatusCode::from_u16(status).expect("status");
    freshness_lifetime(status, resp, &times_at_t0(), &Heuristics::default(), &[])
}

fn storable(status: u16, resp: &[(&str, &str)]) -> bool {
    let status = StatusCode::from_u16(status).expect("status");
    is_storable(
        &Method::GET,
        &HeaderMap::new(),
        status,
        &response(resp),
        &[],
    )
}

/// Evaluates a GET for a 200 stored at T0, `elapsed` seconds later.
fn reuse(req: &[(&str, &str)], resp: &[(&str, &str)], elapsed: u64) -> Reuse {
    evaluate(
        &Method::GET,
        &headers(req),
        &stored_ok(&response(resp)),
        at(T0 + elapsed),
        &Heuristics::default(),
        &[],
    )
}

fn on_error(req: &[(&str, &str)], resp: &[(&str, &str)], elapsed: u64) -> bool {
    may_serve_stale_on_error(
        &headers(req),
        &stored_ok(&response(resp)),
        at(T0 + elapsed),
        &Heuristics::default(),
        &[],
    )
}

/// A 200 stored at T0 with `headers`.
fn stored_ok(headers: &HeaderMap) -> StoredResponse<'_> {
    StoredResponse {
        status: StatusCode::OK,
        headers,
        times: times_at_t0(),
    }
}

/// Current age of the stored response, `None` for a miss.
fn age(reuse: Reuse) -> Option<Duration> {
    match reuse {
        Reuse::Fresh { age }
        | Reuse::Stale { age }
        | Reuse::StaleWhileRevalidate { age }
        | Reuse::Revalidate { age } => Some(age),
        Reuse::Miss => None,
    }
}

fn name(text: &'static str) -> HeaderName {
    HeaderName::from_static(text)
}

// Cache-Control parsing

#[test]
fn cache_control_names_are_case_insensitive() {
    let cc = CacheControl::parse(&headers(&[(
        "cache-control",
        "MAX-AGE=60, No-Store, S-MaxAge=5, Private",
    )]));
    assert_eq!(cc.max_age, Some(secs(60)));
    assert_eq!(cc.s_maxage, Some(secs(5)));
    assert!(cc.no_store);
    assert!(cc.private);
}

#[test]
fn repeated_cache_control_fields_are_combined() {
    let cc = CacheControl::parse(&headers(&[
        ("cache-control", "public"),
        ("cache-control", "max-age=60"),
        ("cache-control", "must-revalidate"),
    ]));
    assert!(cc.public);
    assert_eq!(cc.max_age, Some(secs(60)));
    assert!(cc.must_revalidate);
}

#[test]
fn every_directive_is_parsed() {
    let cc = CacheControl::parse(&headers(&[(
        "cache-control",
        "max-age=1, s-maxage=2, no-store, no-cache, private, public, must-revalidate, \
         proxy-revalidate, must-understand, only-if-cached, max-stale=3, min-fresh=4, \
         stale-while-revalidate=5, stale-if-error=6, immutable, x-unknown=7",
    )]));
    let expected = CacheControl {
        max_age: Some(secs(1)),
        s_maxage: Some(secs(2)),
        no_store: true,
        no_cache: true,
        no_cache_fields: vec![],
        private: true,
        private_fields: vec![],
        public: true,
        must_revalidate: true,
        proxy_revalidate: true,
        must_understand: true,
        only_if_cached: true,
        max_stale: Some(Some(secs(3))),
        min_fresh: Some(secs(4)),
        stale_while_revalidate: Some(secs(5)),
        stale_if_error: Some(secs(6)),
        immutable: true,
        targeted: false,
    };
    assert_eq!(cc, expected);
}

#[test]
fn quoted_field_names_are_parsed_and_commas_inside_quotes_do_not_split() {
    let cc = CacheControl::parse(&headers(&[(
        "cache-control",
        r#"private="Set-Cookie, X-Foo", no-cache="X-Bar", max-age=5"#,
    )]));
    assert!(!cc.private);
    assert_eq!(cc.private_fields, vec![header::SET_COOKIE, name("x-foo")]);
    assert!(!cc.no_cache);
    assert_eq!(cc.no_cache_fields, vec![name("x-bar")]);
    assert_eq!(cc.max_age, Some(secs(5)));
}

#[test]
fn token_form_field_name_is_accepted() {
    let cc = CacheControl::parse(&headers(&[("cache-control", "private=set-cookie")]));
    assert!(!cc.private);
    assert_eq!(cc.private_fields, vec![header::SET_COOKIE]);
}

#[test]
fn qualified_directive_without_valid_field_counts_as_unqualified() {
    let cc = CacheControl::parse(&headers(&[(
        "cache-control",
        r#"private="", no-cache="bad name""#,
    )]));
    assert!(cc.private);
    assert!(cc.no_cache);
}

#[test]
fn unqualified_form_wins_over_qualified() {
    let cc = CacheControl::parse(&headers(&[(
        "cache-control",
        r#"no-cache="x-a", no-cache"#,
    )]));
    assert!(cc.no_cache);
    assert_eq!(cc.no_cache_fields, vec![name("x-a")]);
}

#[test]
fn invalid_max_age_means_stale() {
    for value in [
        "max-age=abc",
        "max-age=-1",
        "max-age=1.5",
        "max-age",
        "max-age=",
    ] {
        let cc = CacheControl::parse(&headers(&[("cache-control", value)]));
        assert_eq!(cc.max_age, Some(Duration::ZERO), "{value}");
    }
    let cc = CacheControl::parse(&headers(&[("cache-control", "s-maxage=soon")]));
    assert_eq!(cc.s_maxage, Some(Duration::ZERO));
}

#[test]
fn other_invalid_delta_seconds_are_ignored() {
    let cc = CacheControl::parse(&headers(&[(
        "cache-control",
        "min-fresh=x, max-stale=-1, stale-while-revalidate=1.5, stale-if-error",
    )]));
    assert_eq!(cc.min_fresh, None);
    assert_eq!(cc.max_stale, None);
    assert_eq!(cc.stale_while_revalidate, None);
    assert_eq!(cc.stale_if_error, None);
}

#[test]
fn first_occurrence_of_repeated_directive_wins() {
    let cc = CacheControl::parse(&headers(&[
        ("cache-control", "max-age=60, stale-if-error=x"),
        (
            "cache-control",
            "max-age=10, stale-if-error=5, stale-if-error=9",
        ),
    ]));
    assert_eq!(cc.max_age, Some(secs(60)));
    assert_eq!(cc.stale_if_error, Some(secs(5)));
}

#[test]
fn quoted_delta_seconds_are_accepted() {
    let cc = CacheControl::parse(&headers(&[("cache-control", r#"max-age="30""#)]));
    assert_eq!(cc.max_age, Some(secs(30)));
}

#[test]
fn huge_delta_seconds_are_capped_at_2_pow_31() {
    let cc = CacheControl::parse(&headers(&[(
        "cache-control",
        "max-age=99999999999999999999999999",
    )]));
    assert_eq!(cc.max_age, Some(secs(1 << 31)));
}

#[test]
fn bare_max_stale_means_any_staleness() {
    let cc = CacheControl::parse(&headers(&[("cache-control", "max-stale")]));
    assert_eq!(cc.max_stale, Some(None));
}

#[test]
fn pragma_no_cache_counts_only_in_a_request_without_cache_control() {
    let pragma = headers(&[("pragma", "No-Cache")]);
    assert!(CacheControl::parse_request(&pragma).no_cache);
    assert!(!CacheControl::parse(&pragma).no_cache);
    let both = headers(&[("pragma", "no-cache"), ("cache-control", "max-age=5")]);
    assert!(!CacheControl::parse_request(&both).no_cache);
}

// Age

#[test]
fn list_valued_age_uses_first_member() {
    let times = times_at_t0();
    let one_line = response(&[("age", "5, 100")]);
    assert_eq!(current_age(&one_line, &times, at(T0)), secs(5));
    let two_lines = response(&[("age", "7"), ("age", "100")]);
    assert_eq!(current_age(&two_lines, &times, at(T0)), secs(7));
}

#[test]
fn invalid_age_is_ignored() {
    for value in ["abc", "-5", "1.5", "5 s", "+5"] {
        let resp = response(&[("age", value), ("age", "100")]);
        assert_eq!(
            current_age(&resp, &times_at_t0(), at(T0)),
            Duration::ZERO,
            "{value}"
        );
    }
}

#[test]
fn apparent_age_uses_date() {
    let resp = response(&[("date", &http_date(T0 - 50))]);
    assert_eq!(current_age(&resp, &times_at_t0(), at(T0)), secs(50));
}

#[test]
fn date_after_response_time_gives_no_apparent_age() {
    let resp = response(&[("date", &http_date(T0 + 50))]);
    assert_eq!(current_age(&resp, &times_at_t0(), at(T0)), Duration::ZERO);
}

#[test]
fn missing_or_invalid_date_uses_response_time() {
    for resp in [HeaderMap::new(), headers(&[("date", "yesterday")])] {
        assert_eq!(current_age(&resp, &times_at_t0(), at(T0 + 3)), secs(3));
    }
}

#[test]
fn corrected_age_value_adds_response_delay() {
    let times = StoredTimes {
        request_time: at(T0 - 4),
        response_time: at(T0),
    };
    let resp = response(&[("age", "10")]);
    assert_eq!(current_age(&resp, &times, at(T0)), secs(14));
}

#[test]
fn corrected_initial_age_is_larger_of_apparent_and_corrected() {
    let times = StoredTimes {
        request_time: at(T0 - 4),
        response_time: at(T0),
    };
    let resp = response(&[("age", "10"), ("date", &http_date(T0 - 30))]);
    assert_eq!(current_age(&resp, &times, at(T0)), secs(30));
}

#[test]
fn resident_time_is_added() {
    let resp = response(&[("age", "10")]);
    assert_eq!(current_age(&resp, &times_at_t0(), at(T0 + 60)), secs(70));
}

// Freshness lifetime

#[test]
fn s_maxage_overrides_max_age_for_a_shared_cache() {
    let resp = response(&[("cache-control", "max-age=60, s-maxage=10")]);
    assert_eq!(lifetime(200, &resp), secs(10));
}

#[test]
fn max_age_overrides_expires() {
    let resp = response(&[
        ("cache-control", "max-age=60"),
        ("expires", &http_date(T0 + 600)),
    ]);
    assert_eq!(lifetime(200, &resp), secs(60));
}

#[test]
fn expires_minus_date_is_the_lifetime() {
    let resp = response(&[("expires", &http_date(T0 + 600))]);
    assert_eq!(lifetime(200, &resp), secs(600));
}

#[test]
fn expires_in_rfc850_form_is_honoured() {
    let resp = response(&[
        ("date", &http_date(RFC_EXAMPLE - 60)),
        ("expires", "Sunday, 06-Nov-94 08:49:37 GMT"),
    ]);
    assert_eq!(lifetime(200, &resp), secs(60));
}

#[test]
fn expires_in_asctime_form_is_honoured() {
    let resp = response(&[
        ("date", &http_date(RFC_EXAMPLE - 60)),
        ("expires", "Sun Nov  6 08:49:37 1994"),
    ]);
    assert_eq!(lifetime(200, &resp), secs(60));
}

#[test]
fn malformed_expires_means_stale() {
    for value in ["0", "-1", "tomorrow", "Sun, 06 Nov 1994 08:49:37 XYZ", ""] {
        let resp = response(&[
            ("expires", value),
            ("last-modified", &http_date(T0 - 86_400)),
        ]);
        assert_eq!(lifetime(200, &resp), Duration::ZERO, "{value:?}");
    }
}

#[test]
fn expires_before_date_means_stale() {
    let resp = response(&[("expires", &http_date(T0 - 10))]);
    assert_eq!(lifetime(200, &resp), Duration::ZERO);
}

#[test]
fn expires_without_date_uses_response_time() {
    let resp = headers(&[("expires", &http_date(T0 + 90))]);
    assert_eq!(lifetime(200, &resp), secs(90));
}

#[test]
fn first_expires_field_is_used() {
    let resp = response(&[
        ("expires", &http_date(T0 + 30)),
        ("expires", &http_date(T0 + 900)),
    ]);
    assert_eq!(lifetime(200, &resp), secs(30));
}

#[test]
fn heuristic_freshness_is_a_fraction_of_time_since_last_modified() {
    let resp = response(&[("last-modified", &http_date(T0 - 1000))]);
    assert_eq!(lifetime(200, &resp), secs(100));
}

#[test]
fn heuristic_freshness_is_clamped() {
    let heuristics = Heuristics {
        lm_factor: 0.1,
        min: secs(200),
        max: secs(500),
    };
    let times = times_at_t0();
    let recent = response(&[("last-modified", &http_date(T0 - 1000))]);
    let old = response(&[("last-modified", &http_date(T0 - 1_000_000))]);
    assert_eq!(
        freshness_lifetime(StatusCode::OK, &recent, &times, &heuristics, &[]),
        secs(200)
    );
    assert_eq!(
        freshness_lifetime(StatusCode::OK, &old, &times, &heuristics, &[]),
        secs(500)
    );
    let old = response(&[("last-modified", &http_date(T0 - 100_000_000))]);
    assert_eq!(lifetime(200, &old), secs(86_400));
}

#[test]
fn heuristic_without_last_modified_is_the_minimum() {
    let heuristics = Heuristics {
        min: secs(7),
        ..Heuristics::default()
    };
    let resp = response(&[]);
    assert_eq!(
        freshness_lifetime(StatusCode::OK, &resp, &times_at_t0(), &heuristics, &[]),
        secs(7)
    );
}

#[test]
fn heuristics_only_for_heuristically_cacheable_status_or_public() {
    let modified = ("last-modified", http_date(T0 - 1000));
    let plain = response(&[(modified.0, &modified.1)]);
    for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
        assert_eq!(lifetime(status, &plain), secs(100), "{status}");
    }
    for status in [201, 302, 307, 403, 500, 503] {
        assert_eq!(lifetime(status, &plain), Duration::ZERO, "{status}");
    }
    let public = response(&[(modified.0, &modified.1), ("cache-control", "public")]);
    assert_eq!(lifetime(500, &public), secs(100));
}

#[test]
fn odd_heuristics_do_not_panic() {
    let resp = response(&[("last-modified", &http_date(T0 - 1000))]);
    let times = times_at_t0();
    let cases = [
        (f64::NAN, 0, 10, 0),
        (-1.0, 0, 10, 0),
        (f64::INFINITY, 0, 10, 10),
        (1e300, 0, 10, 10),
        (0.1, 50, 20, 20),
    ];
    for (lm_factor, min, max, expected) in cases {
        let heuristics = Heuristics {
            lm_factor,
            min: secs(min),
            max: secs(max),
        };
        assert_eq!(
            freshness_lifetime(StatusCode::OK, &resp, &times, &heuristics, &[]),
            secs(expected),
            "{lm_factor}"
        );
    }
}

// Storing

#[test]
fn explicit_freshness_makes_any_final_status_storable() {
    assert!(storable(500, &[("cache-control", "max-age=60")]));
    assert!(storable(302, &[("expires", &http_date(T0 + 60))]));
    assert!(storable(201, &[("cache-control", "s-maxage=60")]));
    assert!(storable(418, &[("cache-control", "public")]));
    assert!(storable(599, &[("cache-control", "max-age=60")]));
}

#[test]
fn without_explicit_freshness_status_must_be_heuristically_cacheable() {
    for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
        assert!(storable(status, &[]), "{status}");
    }
    for status in [201, 302, 303, 307, 400, 403, 500, 502, 503] {
        assert!(!storable(status, &[]), "{status}");
    }
}

#[test]
fn partial_and_not_modified_are_never_stored() {
    assert!(!storable(206, &[("cache-control", "max-age=60")]));
    assert!(!storable(304, &[("cache-control", "max-age=60")]));
}

#[test]
fn non_final_status_is_not_storable() {
    assert!(!storable(100, &[("cache-control", "max-age=60")]));
    assert!(!storable(103, &[("cache-control", "max-age=60")]));
    assert!(!storable(600, &[("cache-control", "max-age=60")]));
}

#[test]
fn only_get_is_storable() {
    let resp = response(&[("cache-control", "max-age=60")]);
    for method in [Method::HEAD, Method::POST, Method::PUT, Method::OPTIONS] {
        assert!(!is_storable(
            &method,
            &HeaderMap::new(),
            StatusCode::OK,
            &resp,
            &[]
        ));
    }
}

#[test]
fn no_store_in_request_or_response_prevents_storage() {
    assert!(!storable(200, &[("cache-control", "max-age=60, no-store")]));
    let req = headers(&[("cache-control", "no-store")]);
    let resp = response(&[("cache-control", "max-age=60")]);
    assert!(!is_storable(&Method::GET, &req, StatusCode::OK, &resp, &[]));
}

#[test]
fn must_understand_ignores_no_store_only_for_understood_status() {
    assert!(storable(
        200,
        &[("cache-control", "must-understand, no-store")]
    ));
    assert!(!storable(
        299,
        &[("cache-control", "must-understand, no-store, max-age=60")]
    ));
    assert!(!storable(
        299,
        &[("cache-control", "must-understand, max-age=60")]
    ));
}

#[test]
fn unqualified_private_prevents_storage_but_qualified_does_not() {
    assert!(!storable(200, &[("cache-control", "private, max-age=60")]));
    assert!(storable(
        200,
        &[("cache-control", r#"private="set-cookie", max-age=60"#)]
    ));
}

#[test]
fn authorization_requires_public_must_revalidate_or_s_maxage() {
    let req = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
    let allowed = |cc: &str| {
        let resp = response(&[("cache-control", cc)]);
        is_storable(&Method::GET, &req, StatusCode::OK, &resp, &[])
    };
    assert!(!allowed("max-age=60"));
    assert!(allowed("public"));
    assert!(allowed("must-revalidate, max-age=60"));
    assert!(allowed("s-maxage=60"));
    assert!(!allowed("proxy-revalidate, max-age=60"));
}

#[test]
fn vary_star_is_not_storable() {
    assert!(!storable(
        200,
        &[("cache-control", "max-age=60"), ("vary", "accept, *")]
    ));
    assert!(storable(
        200,
        &[("cache-control", "max-age=60"), ("vary", "accept")]
    ));
}

#[test]
fn set_cookie_does_not_prevent_storage() {
    assert!(storable(
        200,
        &[("cache-control", "max-age=60"), ("set-cookie", "id=1")]
    ));
}

#[test]
fn no_cache_response_is_storable() {
    assert!(storable(
        200,
        &[("cache-control", "no-cache"), ("etag", "\"v1\"")]
    ));
    assert!(storable(500, &[("cache-control", "no-cache, max-age=60")]));
}

#[test]
fn fields_to_strip_are_private_and_no_cache_fields() {
    let resp = response(&[(
        "cache-control",
        r#"private="Set-Cookie, X-A", no-cache="x-a, X-B""#,
    )]);
    assert_eq!(
        fields_to_strip(&resp, &[]),
        vec![
            header::SET_COOKIE,
            name("set-cookie2"),
            name("x-a"),
            name("x-b")
        ]
    );
    assert_eq!(
        fields_to_strip(&response(&[("cache-control", "private")]), &[]),
        FOR_ONE_CLIENT
    );
}

#[test]
fn cookies_are_stored_without_and_never_merged_in() {
    let resp = response(&[
        ("cache-control", "max-age=60"),
        ("set-cookie", "id=1"),
        ("set-cookie2", "old=1"),
    ]);
    assert!(is_storable(
        &Method::GET,
        &HeaderMap::new(),
        StatusCode::OK,
        &resp,
        &[]
    ));
    let strip = fields_to_strip(&resp, &[]);
    assert!(strip.contains(&header::SET_COOKIE), "{strip:?}");
    assert!(strip.contains(&name("set-cookie2")), "{strip:?}");
    // A 304 that sets a cookie refreshes the stored response, not with the cookie.
    let stored = response(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
    let nm = headers(&[("set-cookie", "id=2"), ("etag", "\"v1\"")]);
    let merged = merge_not_modified(&stored, &nm, &[]);
    assert!(!merged.contains_key(header::SET_COOKIE));
    assert_eq!(merged[header::ETAG], "\"v1\"");
}

// Reuse

#[test]
fn fresh_response_is_served_with_its_age() {
    let resp = [("cache-control", "max-age=60")];
    assert_eq!(reuse(&[], &resp, 59), Reuse::Fresh { age: secs(59) });
    assert_eq!(age(reuse(&[], &resp, 59)), Some(secs(59)));
}

#[test]
fn response_is_stale_once_age_reaches_lifetime() {
    let resp = [("cache-control", "max-age=60")];
    assert_eq!(reuse(&[], &resp, 60), Reuse::Revalidate { age: secs(60) });
}

#[test]
fn set_cookie_does_not_make_response_stale() {
    let resp = [("cache-control", "max-age=60"), ("set-cookie", "id=1")];
    assert_eq!(reuse(&[], &resp, 10), Reuse::Fresh { age: secs(10) });
}

#[test]
fn head_is_answered_and_other_methods_miss() {
    let resp = response(&[("cache-control", "max-age=60")]);
    let answer = |method: Method| {
        evaluate(
            &method,
            &HeaderMap::new(),
            &stored_ok(&resp),
            at(T0),
            &Heuristics::default(),
            &[],
        )
    };
    assert_eq!(
        answer(Method::HEAD),
        Reuse::Fresh {
            age: Duration::ZERO
        }
    );
    assert_eq!(answer(Method::POST), Reuse::Miss);
    assert_eq!(age(Reuse::Miss), None);
}

#[test]
fn response_no_cache_always_revalidates() {
    let resp = [("cache-control", "max-age=600, no-cache")];
    assert_eq!(reuse(&[], &resp, 0), Reuse::Revalidate { age: secs(0) });
    let with_max_stale = [("cache-control", "max-stale")];
    assert_eq!(
        reuse(&with_max_stale, &resp, 0),
        Reuse::Revalidate { age: secs(0) }
    );
}

#[test]
fn qualified_no_cache_does_not_force_revalidation() {
    let resp = [("cache-control", r#"max-age=600, no-cache="set-cookie""#)];
    assert_eq!(reuse(&[], &resp, 5), Reuse::Fresh { age: secs(5) });
}

#[test]
fn request_no_cache_revalidates() {
    let resp = [("cache-control", "max-age=600")];
    let req = [("cache-control", "no-cache")];
    assert_eq!(reuse(&req, &resp, 5), Reuse::Revalidate { age: secs(5) });
}

#[test]
fn request_pragma_no_cache_revalidates() {
    let resp = [("cache-control", "max-age=600")];
    assert_eq!(
        reuse(&[("pragma", "no-cache")], &resp, 5),
        Reuse::Revalidate { age: secs(5) }
    );
}

#[test]
fn request_max_age_bounds_the_age() {
    let resp = [("cache-control", "max-age=600")];
    let req = [("cache-control", "max-age=30")];
    assert_eq!(reuse(&req, &resp, 30), Reuse::Fresh { age: secs(30) });
    assert_eq!(reuse(&req, &resp, 31), Reuse::Revalidate { age: secs(31) });
    let zero = [("cache-control", "max-age=0")];
    assert_eq!(reuse(&zero, &resp, 1), Reuse::Revalidate { age: secs(1) });
}

#[test]
fn request_min_fresh_requires_remaining_freshness() {
    let resp = [("cache-control", "max-age=100")];
    let req = [("cache-control", "min-fresh=30")];
    assert_eq!(reuse(&req, &resp, 70), Reuse::Fresh { age: secs(70) });
    assert_eq!(reuse(&req, &resp, 71), Reuse::Revalidate { age: secs(71) });
}

#[test]
fn min_fresh_outweighs_max_stale() {
    let resp = [("cache-control", "max-age=100")];
    let req = [("cache-control", "min-fresh=10, max-stale")];
    assert_eq!(
        reuse(&req, &resp, 200),
        Reuse::Revalidate { age: secs(200) }
    );
}

#[test]
fn request_max_stale_serves_stale_within_its_limit() {
    let resp = [("cache-control", "max-age=60")];
    let req = [("cache-control", "max-stale=30")];
    assert_eq!(reuse(&req, &resp, 90), Reuse::Stale { age: secs(90) });
    assert_eq!(reuse(&req, &resp, 91), Reuse::Revalidate { age: secs(91) });
}

#[test]
fn bare_max_stale_serves_any_staleness() {
    let resp = [("cache-control", "max-age=60")];
    let req = [("cache-control", "max-stale")];
    assert_eq!(
        reuse(&req, &resp, 1_000_000),
        Reuse::Stale {
            age: secs(1_000_000)
        }
    );
}

#[test]
fn must_revalidate_proxy_revalidate_and_s_maxage_forbid_stale() {
    let req = [("cache-control", "max-stale")];
    for cc in [
        "max-age=60, must-revalidate",
        "max-age=60, proxy-revalidate",
        "s-maxage=60",
        "max-age=60, must-revalidate, stale-while-revalidate=600",
    ] {
        let resp = [("cache-control", cc)];
        assert_eq!(
            reuse(&req, &resp, 61),
            Reuse::Revalidate { age: secs(61) },
            "{cc}"
        );
    }
}

#[test]
fn stale_while_revalidate_window() {
    let resp = [("cache-control", "max-age=60, stale-while-revalidate=30")];
    assert_eq!(reuse(&[], &resp, 59), Reuse::Fresh { age: secs(59) });
    assert_eq!(
        reuse(&[], &resp, 60),
        Reuse::StaleWhileRevalidate { age: secs(60) }
    );
    assert_eq!(
        reuse(&[], &resp, 90),
        Reuse::StaleWhileRevalidate { age: secs(90) }
    );
    assert_eq!(reuse(&[], &resp, 91), Reuse::Revalidate { age: secs(91) });
}

#[test]
fn stale_while_revalidate_is_preferred_over_max_stale() {
    let resp = [("cache-control", "max-age=60, stale-while-revalidate=30")];
    let req = [("cache-control", "max-stale")];
    assert_eq!(
        reuse(&req, &resp, 70),
        Reuse::StaleWhileRevalidate { age: secs(70) }
    );
    assert_eq!(reuse(&req, &resp, 100), Reuse::Stale { age: secs(100) });
}

#[test]
fn request_directives_override_stale_while_revalidate() {
    let resp = [("cache-control", "max-age=60, stale-while-revalidate=30")];
    let req = [("cache-control", "max-age=60")];
    assert_eq!(reuse(&req, &resp, 70), Reuse::Revalidate { age: secs(70) });
}

#[test]
fn heuristic_freshness_is_used_by_evaluate() {
    let resp = [("last-modified", &*http_date(T0 - 1000))];
    assert_eq!(reuse(&[], &resp, 99), Reuse::Fresh { age: secs(99) });
    assert_eq!(reuse(&[], &resp, 100), Reuse::Revalidate { age: secs(100) });
}

// Stale on error

#[test]
fn stale_if_error_window_from_response() {
    let resp = [("cache-control", "max-age=60, stale-if-error=100")];
    assert!(on_error(&[], &resp, 160));
    assert!(!on_error(&[], &resp, 161));
    assert!(!on_error(&[], &[("cache-control", "max-age=60")], 61));
}

#[test]
fn stale_if_error_window_from_request() {
    let resp = [("cache-control", "max-age=60")];
    let req = [("cache-control", "stale-if-error=20")];
    assert!(on_error(&req, &resp, 80));
    assert!(!on_error(&req, &resp, 81));
}

#[test]
fn larger_stale_if_error_window_applies() {
    let resp = [("cache-control", "max-age=60, stale-if-error=10")];
    let req = [("cache-control", "stale-if-error=50")];
    assert!(on_error(&req, &resp, 110));
}

#[test]
fn stale_if_error_forbidden_by_revalidation_directives() {
    for cc in [
        "max-age=60, must-revalidate, stale-if-error=600",
        "max-age=60, proxy-revalidate, stale-if-error=600",
        "s-maxage=60, stale-if-error=600",
        "max-age=60, no-cache, stale-if-error=600",
    ] {
        assert!(!on_error(&[], &[("cache-control", cc)], 61), "{cc}");
    }
}

#[test]
fn fresh_response_is_usable_on_error_unless_no_cache() {
    assert!(on_error(&[], &[("cache-control", "max-age=60")], 10));
    assert!(!on_error(
        &[],
        &[("cache-control", "max-age=60, no-cache")],
        10
    ));
}

#[test]
fn remaining_freshness_is_zero_when_stale() {
    let resp = response(&[("cache-control", "max-age=60")]);
    let remaining = |elapsed| {
        remaining_freshness(
            StatusCode::OK,
            &resp,
            &times_at_t0(),
            at(T0 + elapsed),
            &Heuristics::default(),
            &[],
        )
    };
    assert_eq!(remaining(20), secs(40));
    assert_eq!(remaining(60), Duration::ZERO);
    assert_eq!(remaining(600), Duration::ZERO);
}

// Validation

#[test]
fn conditional_request_uses_etag_and_last_modified() {
    let modified = http_date(T0 - 100);
    let stored = response(&[("etag", "W/\"v1\""), ("last-modified", &modified)]);
    let conditions = conditional_request_headers(&stored);
    assert_eq!(conditions.len(), 2);
    assert_eq!(conditions[header::IF_NONE_MATCH], "W/\"v1\"");
    assert_eq!(conditions[header::IF_MODIFIED_SINCE], modified.as_str());
}

#[test]
fn conditional_request_skips_invalid_validators_and_normalizes_dates() {
    let stored = response(&[("etag", "v1"), ("last-modified", "last week")]);
    assert!(conditional_request_headers(&stored).is_empty());
    let rfc850 = response(&[("last-modified", "Sunday, 06-Nov-94 08:49:37 GMT")]);
    assert_eq!(
        conditional_request_headers(&rfc850)[header::IF_MODIFIED_SINCE],
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
}

#[test]
fn conditional_request_is_empty_without_validators() {
    let stored = response(&[("cache-control", "max-age=60")]);
    assert!(conditional_request_headers(&stored).is_empty());
}

#[test]
fn not_modified_strong_etag_selects_same_strong_etag() {
    let stored = response(&[("etag", "\"v1\"")]);
    assert!(not_modified_matches(
        &stored,
        &headers(&[("etag", "\"v1\"")])
    ));
    assert!(!not_modified_matches(
        &stored,
        &headers(&[("etag", "\"v2\"")])
    ));
    let weak_stored = response(&[("etag", "W/\"v1\"")]);
    assert!(!not_modified_matches(
        &weak_stored,
        &headers(&[("etag", "\"v1\"")])
    ));
}

#[test]
fn not_modified_weak_etag_uses_weak_comparison() {
    let nm = headers(&[("etag", "W/\"v1\"")]);
    assert!(not_modified_matches(&response(&[("etag", "\"v1\"")]), &nm));
    assert!(not_modified_matches(
        &response(&[("etag", "W/\"v1\"")]),
        &nm
    ));
    assert!(!not_modified_matches(
        &response(&[("etag", "W/\"v2\"")]),
        &nm
    ));
    assert!(!not_modified_matches(&response(&[]), &nm));
}

#[test]
fn not_modified_with_malformed_etag_selects_nothing() {
    let stored = response(&[("etag", "\"v1\"")]);
    assert!(!not_modified_matches(&stored, &headers(&[("etag", "v1")])));
}

#[test]
fn not_modified_last_modified_must_match() {
    let stored = response(&[("last-modified", &http_date(T0 - 100))]);
    let same = headers(&[("last-modified", "Tuesday, 14-Nov-23 22:11:40 GMT")]);
    assert!(not_modified_matches(&stored, &same));
    let other = headers(&[("last-modified", &http_date(T0 - 50))]);
    assert!(!not_modified_matches(&stored, &other));
}

#[test]
fn not_modified_without_validators_selects_stored() {
    let stored = response(&[("cache-control", "max-age=60")]);
    assert!(not_modified_matches(
        &stored,
        &headers(&[("date", &http_date(T0))])
    ));
}

#[test]
fn not_modified_without_validators_does_not_select_validated_stored() {
    let stored = response(&[("etag", "\"v1\"")]);
    assert!(!not_modified_matches(&stored, &HeaderMap::new()));
}

#[test]
fn merge_replaces_stored_fields_with_those_of_the_304() {
    let stored = response(&[
        ("cache-control", "max-age=60"),
        ("x-multi", "a"),
        ("x-multi", "b"),
        ("etag", "\"v1\""),
        ("content-type", "text/plain"),
    ]);
    let nm = headers(&[
        ("cache-control", "max-age=600"),
        ("x-multi", "c"),
        ("x-new", "d"),
        ("date", &http_date(T0 + 10)),
    ]);
    let merged = merge_not_modified(&stored, &nm, &[]);
    assert_eq!(merged[header::CACHE_CONTROL], "max-age=600");
    let multi: Vec<_> = merged.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["c"]);
    assert_eq!(merged["x-new"], "d");
    assert_eq!(merged[header::ETAG], "\"v1\"");
    assert_eq!(merged[header::CONTENT_TYPE], "text/plain");
    assert_eq!(merged[header::DATE], http_date(T0 + 10).as_str());
}

#[test]
fn merge_keeps_content_length_and_body_fields() {
    let stored = response(&[("content-length", "42"), ("content-encoding", "gzip")]);
    let nm = headers(&[
        ("content-length", "0"),
        ("content-encoding", "br"),
        ("content-range", "bytes 0-1/2"),
        ("transfer-encoding", "chunked"),
    ]);
    let merged = merge_not_modified(&stored, &nm, &[]);
    assert_eq!(merged[header::CONTENT_LENGTH], "42");
    assert_eq!(merged[header::CONTENT_ENCODING], "gzip");
    assert!(!merged.contains_key(header::CONTENT_RANGE));
    assert!(!merged.contains_key(header::TRANSFER_ENCODING));
}

#[test]
fn merge_ignores_hop_by_hop_and_proxy_fields() {
    let nm = headers(&[
        ("connection", "x-hop, keep-alive"),
        ("x-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-authenticate", "Basic"),
        ("x-end", "2"),
    ]);
    let merged = merge_not_modified(&response(&[]), &nm, &[]);
    for field in ["connection", "x-hop", "keep-alive", "proxy-authenticate"] {
        assert!(!merged.contains_key(field), "{field}");
    }
    assert_eq!(merged["x-end"], "2");
}

#[test]
fn merge_drops_old_age_and_date_missing_from_the_304() {
    let stored = response(&[("age", "30")]);
    let merged = merge_not_modified(&stored, &headers(&[("etag", "\"v1\"")]), &[]);
    assert!(!merged.contains_key(header::AGE));
    assert!(!merged.contains_key(header::DATE));
    let merged = merge_not_modified(&stored, &headers(&[("age", "3")]), &[]);
    assert_eq!(merged[header::AGE], "3");
}

#[test]
fn merge_strips_fields_the_cache_control_keeps_private() {
    let stored = response(&[("cache-control", r#"max-age=60, private="set-cookie""#)]);
    let nm = headers(&[("set-cookie", "id=2"), ("x-other", "1")]);
    let merged = merge_not_modified(&stored, &nm, &[]);
    assert!(!merged.contains_key(header::SET_COOKIE));
    assert_eq!(merged["x-other"], "1");
}

// Client conditional requests

#[test]
fn if_none_match_uses_weak_comparison() {
    let stored = response(&[("etag", "\"v1\"")]);
    let matching = headers(&[("if-none-match", "\"v0\", W/\"v1\"")]);
    assert!(client_not_modified(&matching, &stored));
    let other = headers(&[("if-none-match", "\"v2\"")]);
    assert!(!client_not_modified(&other, &stored));
}

#[test]
fn if_none_match_fields_are_combined_and_may_hold_commas() {
    let stored = response(&[("etag", "\"a,b\"")]);
    let req = headers(&[("if-none-match", "\"x\""), ("if-none-match", "\"a,b\"")]);
    assert!(client_not_modified(&req, &stored));
}

#[test]
fn if_none_match_star_matches_any_stored_response() {
    let req = headers(&[("if-none-match", "*")]);
    assert!(client_not_modified(&req, &response(&[])));
}

#[test]
fn malformed_if_none_match_means_modified() {
    let stored = response(&[("etag", "\"v1\"")]);
    let req = headers(&[("if-none-match", "\"v1\", v2")]);
    assert!(!client_not_modified(&req, &stored));
}

#[test]
fn if_none_match_takes_precedence_over_if_modified_since() {
    let stored = response(&[("etag", "\"v1\""), ("last-modified", &http_date(T0 - 100))]);
    let req = headers(&[
        ("if-none-match", "\"v2\""),
        ("if-modified-since", &http_date(T0)),
    ]);
    assert!(!client_not_modified(&req, &stored));
}

#[test]
fn if_modified_since_compares_last_modified() {
    let stored = response(&[("last-modified", &http_date(T0 - 100))]);
    let at_modification = headers(&[("if-modified-since", &http_date(T0 - 100))]);
    assert!(client_not_modified(&at_modification, &stored));
    let before = headers(&[("if-modified-since", &http_date(T0 - 101))]);
    assert!(!client_not_modified(&before, &stored));
}

#[test]
fn if_modified_since_falls_back_to_date() {
    let stored = response(&[]);
    let after = headers(&[("if-modified-since", &http_date(T0 + 1))]);
    assert!(client_not_modified(&after, &stored));
    let before = headers(&[("if-modified-since", &http_date(T0 - 1))]);
    assert!(!client_not_modified(&before, &stored));
}

#[test]
fn invalid_or_repeated_if_modified_since_is_ignored() {
    let stored = response(&[("last-modified", &http_date(T0 - 100))]);
    let invalid = headers(&[("if-modified-since", "now")]);
    assert!(!client_not_modified(&invalid, &stored));
    let repeated = headers(&[
        ("if-modified-since", &http_date(T0)),
        ("if-modified-since", &http_date(T0)),
    ]);
    assert!(!client_not_modified(&repeated, &stored));
}

// Vary

#[test]
fn vary_fields_are_combined_lowercased_and_deduplicated() {
    let resp = response(&[
        ("vary", "Accept-Encoding, ACCEPT"),
        ("vary", "accept-encoding"),
    ]);
    let values = vary_request_values(&resp, &HeaderMap::new()).expect("no star");
    assert_eq!(
        values,
        vec![(header::ACCEPT_ENCODING, None), (header::ACCEPT, None),]
    );
}

#[test]
fn vary_star_has_no_request_values() {
    let resp = response(&[("vary", "accept"), ("vary", "*")]);
    assert_eq!(vary_request_values(&resp, &HeaderMap::new()), None);
}

#[test]
fn vary_request_values_are_joined_and_trimmed() {
    let resp = response(&[("vary", "accept-language")]);
    let req = headers(&[("accept-language", " en "), ("accept-language", "fr\t")]);
    let values = vary_request_values(&resp, &req).expect("no star");
    assert_eq!(
        values,
        vec![(header::ACCEPT_LANGUAGE, Some("en, fr".to_owned()))]
    );
}

#[test]
fn vary_matches_compares_normalized_values() {
    let resp = response(&[("vary", "accept-encoding, x-absent")]);
    let stored =
        vary_request_values(&resp, &headers(&[("accept-encoding", "gzip, br")])).expect("no star");
    let split = headers(&[("accept-encoding", "gzip "), ("accept-encoding", " br")]);
    assert!(vary_matches(&stored, &split));
    assert!(!vary_matches(
        &stored,
        &headers(&[("accept-encoding", "gzip")])
    ));
    assert!(!vary_matches(&stored, &HeaderMap::new()));
    let extra = headers(&[("accept-encoding", "gzip, br"), ("x-absent", "")]);
    assert!(!vary_matches(&stored, &extra));
}

#[test]
fn vary_values_with_other_bytes_never_collide() {
    let resp = response(&[("vary", "x-v")]);
    let value = |bytes: &[u8]| {
        let mut req = HeaderMap::new();
        req.insert("x-v", HeaderValue::from_bytes(bytes).expect("value"));
        vary_request_values(&resp, &req).expect("no star")
    };
    assert_ne!(value(b"\xff"), value(b"\xfe"));
    assert_ne!(value(b"\xff"), value(b"%FF"));
    assert_eq!(value(b"\xff")[0].1.as_deref(), Some("%FF"));
}

// Invalidation and Age field

#[test]
fn unsafe_method_with_success_or_redirect_invalidates() {
    let unknown = Method::from_bytes(b"PURGE").expect("method");
    for method in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        unknown,
    ] {
        assert!(invalidates(&method, StatusCode::OK), "{method}");
        assert!(invalidates(&method, StatusCode::SEE_OTHER), "{method}");
    }
}

#[test]
fn error_status_or_safe_method_does_not_invalidate() {
    assert!(!invalidates(&Method::POST, StatusCode::NOT_FOUND));
    assert!(!invalidates(&Method::POST, StatusCode::BAD_GATEWAY));
    assert!(!invalidates(&Method::POST, StatusCode::CONTINUE));
    for method in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
        assert!(!invalidates(&method, StatusCode::OK), "{method}");
    }
}

#[test]
fn age_header_is_whole_seconds_capped_at_2_pow_31() {
    assert_eq!(age_header(Duration::from_millis(5_999)), "5");
    assert_eq!(age_header(secs(u64::MAX)), "2147483648");
}

// Robustness

const FIELDS: [&str; 14] = [
    "cache-control",
    "pragma",
    "age",
    "date",
    "expires",
    "last-modified",
    "etag",
    "vary",
    "connection",
    "if-none-match",
    "if-modified-since",
    "authorization",
    "set-cookie",
    "accept",
];

fn field_bytes() -> impl Strategy<Value = Vec<u8>> {
    let interesting = prop::sample::select(b"0123456789,;=\"\\ \tW/*-aeGMTnocahx".to_vec());
    prop::collection::vec(prop_oneof![any::<u8>(), interesting], 0..48)
}

proptest! {
    #[test]
    fn arbitrary_header_bytes_never_panic(
        fields in prop::collection::vec((0..FIELDS.len(), field_bytes()), 0..12),
        status in 100u16..1000,
        clock in prop::collection::vec(0u64..4_000_000_000, 3),
        lm_factor in any::<f64>(),
        bounds in (any::<u64>(), any::<u64>()),
    ) {
        let mut map = HeaderMap::new();
        for (index, bytes) in fields {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                map.append(HeaderName::from_static(FIELDS[index]), value);
            }
        }
        let status = StatusCode::from_u16(status).expect("status in range");
        let times = StoredTimes { request_time: at(clock[0]), response_time: at(clock[1]) };
        let now = at(clock[2]);
        let heuristics = Heuristics {
            lm_factor,
            min: secs(bounds.0),
            max: secs(bounds.1),
        };
        CacheControl::parse_request(&map);
        is_storable(&Method::GET, &map, status, &map, &[]);
        fields_to_strip(&map, &[]);
        let stored = StoredResponse { status, headers: &map, times };
        evaluate(&Method::GET, &map, &stored, now, &heuristics, &[]);
        may_serve_stale_on_error(&map, &stored, now, &heuristics, &[]);
        remaining_freshness(status, &map, &times, now, &heuristics, &[]);
        conditional_request_headers(&map);
        not_modified_matches(&map, &map);
        merge_not_modified(&map, &map, &[]);
        client_not_modified(&map, &map);
        if let Some(values) = vary_request_values(&map, &map) {
            prop_assert!(vary_matches(&values, &map));
        }
        age_header(current_age(&map, &times, now));
    }
}

// Stale responses that must not be served

#[test]
fn stale_must_revalidate_is_revalidated_although_the_client_did_not_ask() {
    // RFC 9111 §5.2.2.2: "the must-revalidate response directive indicates that once the
    // response has become stale, a cache MUST NOT reuse that response to satisfy another
    // request until it has been successfully validated by the origin".
    for cc in [
        "max-age=60, must-revalidate",
        "max-age=60, proxy-revalidate",
        "s-maxage=60",
        "max-age=60, no-cache",
    ] {
        let resp = [("cache-control", cc)];
        assert_eq!(
            reuse(&[], &resp, 61),
            Reuse::Revalidate { age: secs(61) },
            "{cc}"
        );
    }
}

#[test]
fn neither_max_stale_nor_stale_if_error_overrides_a_revalidation_directive() {
    // RFC 9111 §4.2.4: "A cache MUST NOT generate a stale response if it is prohibited by an
    // explicit in-protocol directive (e.g., by a no-cache response directive, a
    // must-revalidate response directive, or an applicable s-maxage or proxy-revalidate
    // response directive)".
    for cc in [
        "max-age=60, must-revalidate, stale-if-error=600",
        "max-age=60, proxy-revalidate, stale-if-error=600",
        "s-maxage=60, stale-if-error=600",
        "max-age=60, no-cache, stale-if-error=600",
    ] {
        let resp = [("cache-control", cc)];
        for req in [
            &[("cache-control", "max-stale")][..],
            &[("cache-control", "max-stale=600, stale-if-error=600")],
        ] {
            assert_eq!(
                reuse(req, &resp, 61),
                Reuse::Revalidate { age: secs(61) },
                "{cc}"
            );
            assert!(!on_error(req, &resp, 61), "{cc}");
        }
    }
}

// Targeted cache control (RFC 9213)

const CDN: [HeaderName; 1] = [HeaderName::from_static("cdn-cache-control")];

fn targeted_lifetime(resp: &[(&str, &str)], targets: &[HeaderName]) -> Duration {
    let resp = response(resp);
    freshness_lifetime(
        StatusCode::OK,
        &resp,
        &times_at_t0(),
        &Heuristics::default(),
        targets,
    )
}

fn targeted_reuse(resp: &[(&str, &str)], elapsed: u64) -> Reuse {
    evaluate(
        &Method::GET,
        &HeaderMap::new(),
        &stored_ok(&response(resp)),
        at(T0 + elapsed),
        &Heuristics::default(),
        &CDN,
    )
}

#[test]
fn a_targeted_field_takes_precedence_over_cache_control_and_expires() {
    // RFC 9213 §2.2: "the cache MUST select the first (in target-list order) field with a
    // valid, non-empty value and use its value to determine the caching policy for the
    // response, and it MUST ignore the Cache-Control and Expires header fields".
    let resp = [
        ("cache-control", "max-age=60, s-maxage=120"),
        ("cdn-cache-control", "max-age=600"),
    ];
    assert_eq!(targeted_lifetime(&resp, &CDN), secs(600));
    assert_eq!(targeted_lifetime(&resp, &[]), secs(120));
    let expires = http_date(T0 + 50);
    let with_expires = [
        ("expires", expires.as_str()),
        ("cdn-cache-control", "public"),
    ];
    assert_eq!(
        targeted_lifetime(&with_expires, &CDN),
        Duration::ZERO,
        "Expires ignored: a 200 without Last-Modified gets the heuristic minimum"
    );
    assert_eq!(targeted_lifetime(&with_expires, &[]), secs(50));
}

#[test]
fn the_first_field_of_the_target_list_wins() {
    // RFC 9213 §2.2: "the first (in target-list order) field with a valid, non-empty value".
    let targets = [name("canopy-cache-control"), name("cdn-cache-control")];
    let resp = [
        ("cdn-cache-control", "max-age=600"),
        ("canopy-cache-control", "max-age=30"),
    ];
    assert_eq!(targeted_lifetime(&resp, &targets), secs(30));
    let invalid_first = [
        ("cdn-cache-control", "max-age=600"),
        ("canopy-cache-control", "Max-Age=30"),
    ];
    assert_eq!(targeted_lifetime(&invalid_first, &targets), secs(600));
}

#[test]
fn targeted_fields_not_on_the_list_change_nothing() {
    // RFC 9213 §2.2: "Targeted fields that are not on a cache's target list MUST NOT change
    // that cache's behavior".
    let resp = [
        ("cache-control", "max-age=60"),
        ("cdn-cache-control", "no-store"),
    ];
    assert!(storable(200, &resp));
    assert_eq!(
        targeted_lifetime(&resp, &[name("other-cache-control")]),
        secs(60)
    );
}

#[test]
fn an_invalid_or_empty_targeted_field_is_ignored_as_a_whole() {
    // RFC 9213 §2.1: "If a targeted field in a given response is empty, or a parsing error is
    // encountered, that field MUST be ignored by the cache (i.e., it behaves as if the field
    // were not present, likely falling back to other cache-control mechanisms present)."
    for broken in [
        "max-age=600, no-store,",
        "max-age=600 no-store",
        "MAX-AGE=600, no-store",
        "max-age=600, private=\"unterminated",
        "",
    ] {
        let resp = [
            ("cache-control", "max-age=60"),
            ("cdn-cache-control", broken),
        ];
        assert_eq!(targeted_lifetime(&resp, &CDN), secs(60), "{broken:?}");
        let resp = response(&resp);
        assert!(is_storable(
            &Method::GET,
            &HeaderMap::new(),
            StatusCode::OK,
            &resp,
            &CDN
        ));
    }
}

#[test]
fn targeted_directives_mean_what_they_mean_in_cache_control() {
    // RFC 9213 §2.2: "Caches that use a targeted field MUST implement the semantics of the
    // following cache directives: max-age, must-revalidate, no-store, no-cache, private";
    // "The semantics and precedence of cache directives in a targeted field are the same as
    // those in Cache-Control. In particular, no-store and no-cache make max-age inoperative".
    let stored = |cdn: &str| {
        let resp = response(&[("cache-control", "max-age=600"), ("cdn-cache-control", cdn)]);
        is_storable(&Method::GET, &HeaderMap::new(), StatusCode::OK, &resp, &CDN)
    };
    assert!(!stored("max-age=600, no-store"));
    assert!(!stored("private"));
    assert!(stored("private=\"x-user\""));
    let named = response(&[("cdn-cache-control", "max-age=60, private=\"x-user\"")]);
    assert!(fields_to_strip(&named, &CDN).contains(&name("x-user")));
    assert!(stored("no-cache"));
    let no_cache = [("cdn-cache-control", "max-age=600, no-cache")];
    assert_eq!(
        targeted_reuse(&no_cache, 1),
        Reuse::Revalidate { age: secs(1) }
    );
    let must = [
        ("cache-control", "max-age=60"),
        ("cdn-cache-control", "max-age=30, must-revalidate"),
    ];
    assert_eq!(targeted_reuse(&must, 20), Reuse::Fresh { age: secs(20) });
    assert_eq!(
        targeted_reuse(&must, 31),
        Reuse::Revalidate { age: secs(31) }
    );
    let s_maxage = [("cdn-cache-control", "max-age=30, s-maxage=90")];
    assert_eq!(
        targeted_reuse(&s_maxage, 60),
        Reuse::Fresh { age: secs(60) }
    );
    assert_eq!(
        targeted_reuse(&s_maxage, 91),
        Reuse::Revalidate { age: secs(91) }
    );
}

#[test]
fn a_targeted_no_store_does_not_stop_other_caches_and_the_reverse() {
    // RFC 9213 §3.1's examples: "CDN-Cache-Control: max-age=600 / Cache-Control: no-store"
    // lets the CDN store for 600 s; "Cache-Control: no-store / CDN-Cache-Control: none"
    // prevents "all caches except for CDN caches from storing the response".
    for (cdn, lifetime) in [("max-age=600", 600), ("none", 0)] {
        let resp = response(&[("cache-control", "no-store"), ("cdn-cache-control", cdn)]);
        assert!(is_storable(
            &Method::GET,
            &HeaderMap::new(),
            StatusCode::OK,
            &resp,
            &CDN
        ));
        assert!(!is_storable(
            &Method::GET,
            &HeaderMap::new(),
            StatusCode::OK,
            &resp,
            &[]
        ));
        let times = times_at_t0();
        let got = freshness_lifetime(StatusCode::OK, &resp, &times, &Heuristics::default(), &CDN);
        assert_eq!(got, secs(lifetime), "{cdn}");
    }
}

#[test]
fn a_targeted_lifetime_is_counted_against_the_age_field() {
    // RFC 9213 §2.3: "HTTP caching has a single, end-to-end freshness model"; the current age
    // (RFC 9111 §4.2.3), Age included, is compared with the targeted lifetime: "Age: 1800,
    // Cache-Control: max-age=600, CDN-Cache-Control: max-age=3600" is fresh for the CDN.
    let resp = [
        ("age", "1800"),
        ("cache-control", "max-age=600"),
        ("cdn-cache-control", "max-age=3600"),
    ];
    assert_eq!(targeted_reuse(&resp, 0), Reuse::Fresh { age: secs(1800) });
    assert_eq!(
        targeted_reuse(&resp, 1801),
        Reuse::Revalidate { age: secs(3601) }
    );
    assert_eq!(reuse(&[], &resp, 0), Reuse::Revalidate { age: secs(1800) });
}

#[test]
fn targeted_values_of_the_wrong_type_are_not_consumed() {
    // RFC 9213 §2.1: "Implementations SHOULD NOT consume values that violate these inferred
    // constraints. For example, a consuming implementation that coerces a max-age with a
    // decimal value into an integer would behave differently than other implementations".
    let cc = CacheControl::parse_response(
        &headers(&[(
            "cdn-cache-control",
            "max-age=1.5, s-maxage=\"60\", no-store=?0, public",
        )]),
        &CDN,
    );
    assert_eq!((cc.max_age, cc.s_maxage, cc.no_store), (None, None, false));
    assert!(cc.public && cc.targeted);
}

// Beyond the MUSTs

#[test]
fn expires_is_read_in_all_three_forms_whatever_the_case_of_its_names() {
    // RFC 9110 §5.6.7: "A recipient that parses a timestamp value in an HTTP field MUST
    // accept all three HTTP-date formats."
    for expires in [
        "Sun, 06 Nov 1994 08:49:47 GMT",
        "Sunday, 06-Nov-94 08:49:47 GMT",
        "Sun Nov  6 08:49:47 1994",
        "sun, 06 nov 1994 08:49:47 gmt",
        "SUNDAY, 06-NOV-94 08:49:47 GMT",
        "sun nov  6 08:49:47 1994",
    ] {
        let resp = headers(&[
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("expires", expires),
        ]);
        let times = StoredTimes {
            request_time: at(RFC_EXAMPLE),
            response_time: at(RFC_EXAMPLE),
        };
        let got = freshness_lifetime(StatusCode::OK, &resp, &times, &Heuristics::default(), &[]);
        assert_eq!(got, secs(10), "{expires}");
    }
}

#[test]
fn no_cache_responses_are_stored_and_revalidated_not_refetched() {
    // RFC 9111 §5.2.2.4: "The no-cache response directive [...] indicates that the response
    // MUST NOT be used to satisfy any other request without forwarding it for validation and
    // receiving a successful response"; it does not forbid storing.
    let resp = [("cache-control", "no-cache"), ("etag", "\"v1\"")];
    assert!(storable(200, &resp));
    assert_eq!(reuse(&[], &resp, 0), Reuse::Revalidate { age: secs(0) });
    let fresh = [
        ("cache-control", "max-age=600, no-cache"),
        ("etag", "\"v1\""),
    ];
    assert_eq!(reuse(&[], &fresh, 5), Reuse::Revalidate { age: secs(5) });
}

#[test]
fn a_response_that_says_it_is_shared_answers_an_authenticated_request() {
    // RFC 9111 §3.5: "a shared cache MUST NOT use a cached response to a request with an
    // Authorization header field [...] to satisfy any subsequent request unless the response
    // contains a Cache-Control field with a response directive [...] that allows it to be
    // stored by a shared cache": public, must-revalidate, s-maxage.
    let answers = |cc: &str| answers_credentials(&response(&[("cache-control", cc)]), &[]);
    assert!(answers("public, max-age=60"));
    assert!(answers("must-revalidate, max-age=60"));
    assert!(answers("s-maxage=60"));
    assert!(!answers("max-age=60"));
    assert!(!answers("proxy-revalidate, max-age=60"));
    let cdn = response(&[
        ("cache-control", "max-age=60"),
        ("cdn-cache-control", "public"),
    ]);
    assert!(answers_credentials(&cdn, &CDN));
}

#[test]
fn equivalent_request_values_select_the_same_variant() {
    // RFC 9111 §4.1: "a cache MAY normalize both header fields to reduce the number of stored
    // variants [...] by adding or removing whitespace where allowed in the field's syntax or
    // by combining multiple message fields".
    let resp = response(&[("vary", "accept-language, foo")]);
    let key = |lang: &str, foo: &[&str]| {
        let mut req = headers(&[("accept-language", lang)]);
        for line in foo {
            req.append("foo", HeaderValue::from_str(line).expect("value"));
        }
        vary_request_values(&resp, &req).expect("no star")
    };
    let stored = key("en, de", &["1, 2"]);
    for (lang, foo) in [
        ("de, en", &["1,2"][..]),
        ("eN, De", &[" 1, 2 "]),
        (" en ,   de", &["1", "2"]),
        ("de,en", &["1", " 2"]),
    ] {
        assert_eq!(key(lang, foo), stored, "{lang:?} {foo:?}");
    }
    assert_ne!(key("en;q=0.5, de", &["1, 2"]), stored, "weights are kept");
    assert_ne!(
        key("en, de", &["2, 1"]),
        stored,
        "order counts in other fields"
    );
    assert_eq!(
        key("EN; q=0.5", &["1"]),
        key("en;q=0.5", &["1"]),
        "white space around ; and = and case do not count in Accept-Language"
    );
}

#[test]
fn a_last_modified_validator_is_used_when_there_is_no_etag() {
    // RFC 9111 §4.3.1: "If-Modified-Since [...] containing the Last-Modified [...] value from
    // the selected (see Section 4.1) stored response, if only one is selected."
    let modified = http_date(T0 - 3600);
    let stored = response(&[("last-modified", &modified)]);
    let conditions = conditional_request_headers(&stored);
    assert_eq!(conditions[header::IF_MODIFIED_SINCE], modified.as_str());
    assert!(!conditions.contains_key(header::IF_NONE_MATCH));
    // RFC 9111 §5.2.1.4: with a request's no-cache, a cache "MUST NOT use a stored response to
    // satisfy the request without successful validation on the origin server", fresh or not.
    let resp = [
        ("cache-control", "max-age=600"),
        ("last-modified", &modified),
    ];
    let ask = [("cache-control", "no-cache")];
    assert_eq!(reuse(&ask, &resp, 5), Reuse::Revalidate { age: secs(5) });
    let ask = [("cache-control", "max-age=0")];
    assert_eq!(reuse(&ask, &resp, 5), Reuse::Revalidate { age: secs(5) });
}

// Validating several variants at once

#[test]
fn every_stored_variant_s_etag_is_sent_to_validate() {
    // RFC 9111 §4.3.1: "When generating a conditional request for validation, a cache [...]
    // SHOULD send [...] If-None-Match [...] containing all of the entity tags from the stored
    // responses" (with several variants, §4.1: "validate with the origin server using all
    // stored responses").
    let a = response(&[("etag", "\"a\"")]);
    let b = response(&[("etag", "W/\"b\"")]);
    let none = response(&[]);
    let again = response(&[("etag", "\"a\"")]);
    let broken = response(&[("etag", "unquoted")]);
    let condition = variants_condition([&a, &none, &b, &again, &broken]).expect("etags");
    assert_eq!(condition, "\"a\", W/\"b\"");
    assert_eq!(variants_condition([&none, &broken]), None);
}

#[test]
fn a_304_selects_the_variant_whose_etag_it_names() {
    // RFC 9111 §4.3.4: "If the new response contains a strong validator (see Section 8.8.1 of
    // [HTTP]), then that strong validator identifies the selected representation for update.
    // All the stored responses with the same strong validator are identified for update."
    let a = response(&[("etag", "\"a\"")]);
    let b = response(&[("etag", "\"b\"")]);
    let named = |tag: &str| selected_variant([&a, &b], &headers(&[("etag", tag)]));
    assert_eq!(named("\"b\""), Some(1));
    assert_eq!(named("\"a\""), Some(0));
    assert_eq!(named("\"c\""), None);
    assert_eq!(selected_variant([&a, &b], &HeaderMap::new()), None);
    let updated = merge_not_modified(
        &b,
        &headers(&[
            ("etag", "\"b\""),
            ("cache-control", "max-age=600"),
            ("x-new", "1"),
        ]),
        &[],
    );
    assert_eq!(updated["x-new"], "1");
    assert_eq!(updated[header::CACHE_CONTROL], "max-age=600");
}

fn post_reusable(target: &str, req: &[(&str, &str)], status: u16, resp: &[(&str, &str)]) -> bool {
    let target: http::Uri = target.parse().expect("test target");
    let status = StatusCode::from_u16(status).expect("status");
    post_reusable_for_get(&target, &headers(req), status, &response(resp), &[])
}

#[test]
fn a_post_response_with_explicit_freshness_naming_its_target_is_kept_for_get() {
    // RFC 9110 §9.3.3: "Responses to POST requests are only cacheable when they include
    // explicit freshness information (see Section 4.2.1 of [CACHING]) and a Content-Location
    // header field that has the same value as the POST's target URI (Section 8.7). A cached
    // POST response can be reused to satisfy a later GET or HEAD request."
    let target = "http://Example.com/forms/order?id=7";
    for explicit in [
        ("cache-control", "max-age=60"),
        ("cache-control", "s-maxage=60"),
        ("expires", "Tue, 14 Nov 2023 22:23:20 GMT"),
    ] {
        let fields = [explicit, ("content-location", target)];
        assert!(post_reusable(target, &[], 200, &fields), "{explicit:?}");
    }
    let location = |value| [("cache-control", "max-age=60"), ("content-location", value)];
    // RFC 9110 §8.7: "its value refers (after conversion to absolute form) to a URI that is
    // the same as the target URI".
    for same in [
        "http://example.com/forms/order?id=7",
        "HTTP://EXAMPLE.COM/forms/order?id=7",
        "//example.com/forms/order?id=7",
        "/forms/order?id=7",
        "order?id=7",
        "./order?id=7",
        "../forms/order?id=7",
        "?id=7",
    ] {
        assert!(post_reusable(target, &[], 200, &location(same)), "{same}");
    }
    for other in [
        "http://example.com/forms/order",
        "http://example.com/Forms/order?id=7",
        "http://other.example/forms/order?id=7",
        "https://example.com/forms/order?id=7",
        "/forms/order?id=8",
        "receipt",
        "/forms/order?id=7#top",
        "",
    ] {
        assert!(
            !post_reusable(target, &[], 200, &location(other)),
            "{other}"
        );
    }
}

#[test]
fn a_post_response_without_explicit_freshness_or_with_a_refusal_is_not_kept() {
    let target = "http://example.com/cart";
    fn with<'a>(fields: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut all = vec![("content-location", "http://example.com/cart")];
        all.extend_from_slice(fields);
        all
    }
    // Heuristic freshness is not explicit freshness (RFC 9111 §4.2.1).
    let heuristic = with(&[("last-modified", "Mon, 13 Nov 2023 22:13:20 GMT")]);
    assert!(!post_reusable(target, &[], 200, &heuristic));
    assert!(!post_reusable(
        target,
        &[],
        200,
        &with(&[("cache-control", "public")])
    ));
    // RFC 9111 §3: "the no-store cache directive is not present in the response", "if the
    // cache is shared: the private response directive is either not present".
    for refused in ["max-age=60, no-store", "max-age=60, private"] {
        let fields = with(&[("cache-control", refused)]);
        assert!(!post_reusable(target, &[], 200, &fields), "{refused}");
    }
    let fresh = with(&[("cache-control", "max-age=60")]);
    assert!(!post_reusable(
        target,
        &[("cache-control", "no-store")],
        200,
        &fresh
    ));
    // RFC 9111 §3.5: a response to a request with Authorization only when shared explicitly.
    assert!(!post_reusable(
        target,
        &[("authorization", "Basic YTpi")],
        200,
        &fresh
    ));
    for status in [201, 204, 303, 404] {
        assert!(!post_reusable(target, &[], status, &fresh), "{status}");
    }
    let twice = [
        ("cache-control", "max-age=60"),
        ("content-location", target),
        ("content-location", target),
    ];
    assert!(!post_reusable(target, &[], 200, &twice));
}

#[test]
fn a_206_of_the_same_strong_validator_updates_the_stored_complete_response() {
    // RFC 9111 §3.4: "A cache MAY combine these ranges into a single stored response [...] if
    // they all share the same strong validator [...]. When combining the new response with
    // one or more stored responses, a cache MUST update the stored response header fields
    // using the header fields provided in the new response, as per Section 3.2."
    let stored = response(&[
        ("etag", "\"v1\""),
        ("content-length", "10"),
        ("x-version", "1"),
    ]);
    let partial = |etag, range| {
        headers(&[
            ("etag", etag),
            ("content-range", range),
            ("content-length", "5"),
            ("x-version", "2"),
            ("cache-control", "max-age=900"),
        ])
    };
    let same = partial("\"v1\"", "bytes 5-9/10");
    assert!(partial_updates(&stored, 10, &same));
    assert!(!partial_updates(
        &stored,
        10,
        &partial("\"v2\"", "bytes 5-9/10")
    ));
    assert!(
        !partial_updates(&stored, 10, &partial("W/\"v1\"", "bytes 5-9/10")),
        "a weak validator never combines"
    );
    assert!(
        !partial_updates(&stored, 10, &partial("\"v1\"", "bytes 5-9/11")),
        "another length is another representation"
    );
    let multipart = headers(&[
        ("etag", "\"v1\""),
        ("content-type", "multipart/byteranges; boundary=x"),
    ]);
    assert!(!partial_updates(&stored, 10, &multipart));
    // RFC 9111 §3.2: "Caches are required to update a stored response's header fields from
    // another (newer) response" except "Header fields that provide metadata about the message
    // rather than the content", Content-Length and Content-Range among them.
    let updated = merge_not_modified(&stored, &same, &[]);
    assert_eq!(updated["x-version"], "2");
    assert_eq!(updated[header::CACHE_CONTROL], "max-age=900");
    assert_eq!(updated[header::CONTENT_LENGTH], "10");
    assert!(!updated.contains_key(header::CONTENT_RANGE));
    let modified = http_date(T0 - 3600);
    let dated = |fields: &[(&str, &str)]| {
        let mut all = vec![("last-modified", modified.as_str())];
        all.extend_from_slice(fields);
        response(&all)
    };
    assert!(partial_updates(
        &dated(&[]),
        10,
        &dated(&[("content-range", "bytes 0-4/10")])
    ));
}
