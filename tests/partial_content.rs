//! Partial content end to end (RFC 9111 §3.3–3.5, RFC 9110 §13.1.5): 206 responses kept per
//! Vary variant and served only to a request that selects that variant, the object they
//! complete stored as that variant in memory and on disk, and the corners where a 206 must
//! not be kept or combined.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Response, StatusCode};

use common::*;

const LENGTH: usize = 1000;

/// Larger than `max_object_size_in_memory`: stored on disk only.
const LARGE: usize = 2048 * 1024;

/// The identity representation's bytes: they differ by position.
fn identity(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// The gzip representation's bytes (not real gzip: what matters is that they differ).
fn gzipped(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i * 7 % 241) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// The one range of a `bytes=first-last` request, as a test origin reads it.
fn asked_range(seen: &Seen) -> Option<(usize, usize)> {
    let range = seen.headers.get("range")?.to_str().ok()?;
    let (first, last) = range.strip_prefix("bytes=")?.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// The answer to `seen` from a representation: 206 for a range (unless If-Range names
/// another validator than `etag`, byte for byte), 200 whole otherwise.
fn represent(
    seen: &Seen,
    response: hyper::http::response::Builder,
    etag: &str,
    bytes: Bytes,
) -> Response<OriginBody> {
    let if_range_holds = seen
        .headers
        .get("if-range")
        .is_none_or(|asked| asked.as_bytes() == etag.as_bytes());
    match asked_range(seen).filter(|_| if_range_holds) {
        Some((first, last)) => response
            .status(206)
            .header(
                "content-range",
                format!("bytes {first}-{last}/{}", bytes.len()),
            )
            .body(full(bytes.slice(first..=last)))
            .unwrap(),
        None => response.body(full(bytes)).unwrap(),
    }
}

/// An origin whose objects vary by Accept-Encoding: gzip for a client that accepts it
/// (tagged `"g"`), identity otherwise (`"i"`). `/large` is LARGE bytes, the rest LENGTH.
async fn negotiating_origin() -> Origin {
    Origin::start(|seen| {
        let len = if seen.path == "/large" { LARGE } else { LENGTH };
        let gzip = seen
            .headers
            .get("accept-encoding")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.to_ascii_lowercase().contains("gzip"));
        let response = Response::builder()
            .header("cache-control", "max-age=3600")
            .header("vary", "Accept-Encoding")
            .header("content-type", "application/octet-stream");
        if gzip {
            let response = response
                .header("content-encoding", "gzip")
                .header("etag", "\"g\"");
            represent(seen, response, "\"g\"", gzipped(len))
        } else {
            let response = response.header("etag", "\"i\"");
            represent(seen, response, "\"i\"", identity(len))
        }
    })
    .await
}

fn is_hit(fetched: &Fetched) -> bool {
    fetched.header("x-cache").starts_with("HIT")
}

const GZIP: (&str, &str) = ("accept-encoding", "gzip, deflate");
const IDENTITY: (&str, &str) = ("accept-encoding", "identity");

async fn range(proxy: &Canopy, url: &str, asked: &str, also: &[(&str, &str)]) -> Fetched {
    let mut headers = vec![("range", asked)];
    headers.extend_from_slice(also);
    proxy.request("GET", url, &headers).await
}

/// Waits until the variant that `also` selects is stored whole.
async fn wait_until_stored(proxy: &Canopy, url: &str, also: (&str, &str)) {
    wait_for("the object stored", Duration::from_secs(10), || async {
        let only = [("cache-control", "only-if-cached"), also];
        proxy.request("GET", url, &only).await.status == StatusCode::OK
    })
    .await;
}

/// RFC 9111 §4.1: "When a cache receives a request that can be satisfied by a stored
/// response and that stored response contains a Vary header field, the cache MUST NOT use
/// that stored response without revalidation unless all the presented request header fields
/// nominated by that Vary field value match those fields in the original request".
#[tokio::test]
async fn partial_content_is_kept_per_variant_and_served_only_to_a_matching_request() {
    let origin = negotiating_origin().await;
    let proxy = Canopy::start(&[("range_offset_limit", "0")]).await;
    let url = origin.url("/negotiated");
    let first = range(&proxy, &url, "bytes=0-99", &[GZIP]).await;
    assert_eq!(first.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(first.header("content-encoding"), "gzip");
    assert_eq!(first.body, gzipped(LENGTH).slice(0..100));
    let plain = range(&proxy, &url, "bytes=10-19", &[IDENTITY]).await;
    assert!(
        !is_hit(&plain),
        "the gzip bytes are not the identity client's"
    );
    assert_eq!(plain.body, identity(LENGTH).slice(10..20));
    assert!(plain.headers.get("content-encoding").is_none());
    assert_eq!(origin.count("/negotiated"), 2);
    // Accept-Encoding normalised as the store does: same members, another order and case.
    let again = range(
        &proxy,
        &url,
        "bytes=20-29",
        &[("accept-encoding", "Deflate,GZIP")],
    )
    .await;
    assert!(is_hit(&again), "the gzip variant's partial content");
    assert_eq!(again.header("content-encoding"), "gzip");
    assert_eq!(again.body, gzipped(LENGTH).slice(20..30));
    let plain_again = range(&proxy, &url, "bytes=12-15", &[IDENTITY]).await;
    assert!(
        is_hit(&plain_again),
        "the identity variant's partial content"
    );
    assert_eq!(plain_again.body, identity(LENGTH).slice(12..16));
    assert_eq!(origin.count("/negotiated"), 2);
    let absent = range(&proxy, &url, "bytes=12-15", &[]).await;
    assert!(
        !is_hit(&absent),
        "no Accept-Encoding is a variant of its own"
    );
    assert_eq!(origin.count("/negotiated"), 3);
    // The gzip variant made whole: stored as that variant, with its Vary.
    range(&proxy, &url, &format!("bytes=100-{}", LENGTH - 1), &[GZIP]).await;
    wait_until_stored(&proxy, &url, GZIP).await;
    let whole = proxy.request("GET", &url, &[GZIP]).await;
    assert!(is_hit(&whole));
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.header("content-encoding"), "gzip");
    assert_eq!(whole.header("vary"), "Accept-Encoding");
    assert_eq!(whole.body, gzipped(LENGTH));
    assert_eq!(origin.count("/negotiated"), 4);
    let whole_plain = proxy.request("GET", &url, &[IDENTITY]).await;
    assert!(
        !is_hit(&whole_plain),
        "the completed gzip object is not the identity one"
    );
    assert_eq!(whole_plain.body, identity(LENGTH));
    assert!(whole_plain.headers.get("content-encoding").is_none());
    assert_eq!(origin.count("/negotiated"), 5);
}

#[tokio::test]
async fn objects_completed_from_partial_content_are_stored_on_disk_as_their_variant() {
    let origin = negotiating_origin().await;
    let mut proxy = Canopy::start(&[("range_offset_limit", "0")]).await;
    let (large, small) = (origin.url("/large"), origin.url("/small"));
    for (url, len) in [(&large, LARGE), (&small, LENGTH)] {
        range(&proxy, url, "bytes=0-99", &[GZIP]).await;
        let rest = range(&proxy, url, &format!("bytes=100-{}", len - 1), &[GZIP]).await;
        assert_eq!(rest.status, StatusCode::PARTIAL_CONTENT);
        wait_until_stored(&proxy, url, GZIP).await;
    }
    // The large object is on disk only: found there for the gzip client alone.
    let plain = proxy.request("GET", &large, &[IDENTITY]).await;
    assert!(
        !is_hit(&plain),
        "the disk's gzip object is not the identity one"
    );
    assert_eq!(plain.body, identity(LARGE));
    assert_eq!(origin.count("/large"), 3);
    wait_for("every object on disk", Duration::from_secs(10), || async {
        proxy
            .stats()
            .await
            .disk
            .is_some_and(|disk| disk.writes >= 3)
    })
    .await;
    proxy.kill();
    proxy.restart().await;
    for (url, len) in [(&large, LARGE), (&small, LENGTH)] {
        let whole = proxy.request("GET", url, &[GZIP]).await;
        assert!(is_hit(&whole), "{url} found on disk after the restart");
        assert_eq!(whole.header("content-encoding"), "gzip");
        assert_eq!(whole.header("vary"), "Accept-Encoding");
        assert!(whole.body == gzipped(len), "{url}: the gzip bytes");
    }
    let plain = proxy.request("GET", &large, &[IDENTITY]).await;
    assert!(is_hit(&plain), "the identity variant, stored whole before");
    assert!(plain.body == identity(LARGE));
    let small_plain = proxy.request("GET", &small, &[IDENTITY]).await;
    assert!(!is_hit(&small_plain));
    assert!(small_plain.body == identity(LENGTH));
    assert_eq!(origin.count("/large"), 3);
    assert_eq!(origin.count("/small"), 3);
}

/// RFC 9111 §3.4: "A cache MAY combine these ranges into a single stored response, and
/// reuse that response to satisfy later requests, if they all share the same strong
/// validator". Each answer here has another Last-Modified (and no ETag): the newer 206
/// replaces what was held.
#[tokio::test]
async fn a_206_with_another_last_modified_replaces_the_held_pieces() {
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let origin = Origin::start(move |seen| {
        let n = counter.fetch_add(1, SeqCst);
        // Long before the Date the origin sends: strong validators (RFC 9110 §8.8.2.2).
        let modified = format!("Sun, 06 Nov 1994 08:{n:02}:37 GMT");
        let response = Response::builder()
            .header("cache-control", "max-age=3600")
            .header("last-modified", modified);
        represent(seen, response, "", identity(LENGTH))
    })
    .await;
    let proxy = Canopy::start(&[("range_offset_limit", "0")]).await;
    let url = origin.url("/modified");
    let first = range(&proxy, &url, "bytes=0-99", &[]).await;
    let second = range(&proxy, &url, "bytes=100-199", &[]).await;
    assert_ne!(
        first.header("last-modified"),
        second.header("last-modified")
    );
    let newer = range(&proxy, &url, "bytes=150-159", &[]).await;
    assert!(is_hit(&newer), "the newer piece is held");
    assert_eq!(
        newer.header("last-modified"),
        second.header("last-modified")
    );
    let older = range(&proxy, &url, "bytes=10-19", &[]).await;
    assert!(!is_hit(&older), "the older piece was replaced, not merged");
    let across = range(&proxy, &url, "bytes=50-149", &[]).await;
    assert!(!is_hit(&across));
    assert_eq!(served.load(SeqCst), 4);
}

/// RFC 9111 §3.3 stores partial content only as a complete response would be stored: never
/// `private` (§5.2.2.7) nor `no-store` (§5.2.2.5), so such pieces never make a stored whole.
#[tokio::test]
async fn a_206_marked_private_or_no_store_is_never_kept() {
    for directive in ["private, max-age=3600", "no-store"] {
        let origin = Origin::start(move |seen| {
            let response = Response::builder()
                .header("cache-control", directive)
                .header("etag", "\"p\"");
            represent(seen, response, "\"p\"", identity(LENGTH))
        })
        .await;
        let proxy = Canopy::start(&[("range_offset_limit", "0")]).await;
        let url = origin.url("/own");
        range(&proxy, &url, "bytes=0-499", &[]).await;
        let within = range(&proxy, &url, "bytes=10-19", &[]).await;
        assert!(!is_hit(&within), "{directive}: not kept");
        range(&proxy, &url, "bytes=500-999", &[]).await;
        let whole = proxy.get(&url).await;
        assert!(!is_hit(&whole), "{directive}: no whole made of pieces");
        assert_eq!(origin.count("/own"), 4, "{directive}");
    }
}

/// RFC 9111 §3.5: "A shared cache MUST NOT use a cached response to a request with an
/// Authorization header field to satisfy any subsequent request unless the response
/// contains a Cache-Control field with a response directive that allows it to be stored by
/// a shared cache". A range request with credentials is passed upstream as any range past
/// `range_offset_limit`; its 206 is kept only when `public` (or `s-maxage`,
/// `must-revalidate`) says so, and held pieces answer credentials only then.
#[tokio::test]
async fn a_range_request_with_authorization_follows_the_rules_of_a_complete_response() {
    let origin = Origin::start(|seen| {
        let cache_control = if seen.path == "/public" {
            "public, max-age=3600"
        } else {
            "max-age=3600"
        };
        let response = Response::builder()
            .header("cache-control", cache_control)
            .header("etag", "\"a\"");
        represent(seen, response, "\"a\"", identity(LENGTH))
    })
    .await;
    let proxy = Canopy::start(&[("range_offset_limit", "0")]).await;
    let credentials = ("authorization", "Basic dXNlcjpwYXNz");
    let (public, own) = (origin.url("/public"), origin.url("/own"));
    let first = range(&proxy, &public, "bytes=100-199", &[credentials]).await;
    assert_eq!(first.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        origin.seen()[0].headers["range"],
        "bytes=100-199",
        "passed upstream as asked"
    );
    let within = range(&proxy, &public, "bytes=110-119", &[credentials]).await;
    assert!(is_hit(&within), "public: kept and shared with credentials");
    assert_eq!(within.body, identity(LENGTH).slice(110..120));
    let anonymous = range(&proxy, &public, "bytes=120-129", &[]).await;
    assert!(is_hit(&anonymous));
    assert_eq!(origin.count("/public"), 1);

    range(&proxy, &own, "bytes=100-199", &[credentials]).await;
    let own_again = range(&proxy, &own, "bytes=110-119", &[]).await;
    assert!(!is_hit(&own_again), "kept only when public says so");
    let with_credentials = range(&proxy, &own, "bytes=110-119", &[credentials]).await;
    assert!(
        !is_hit(&with_credentials),
        "pieces held without public never answer credentials"
    );
    assert_eq!(origin.count("/own"), 3);
}

/// RFC 9110 §13.1.5: "A valid entity-tag can be distinguished from a valid HTTP-date by
/// examining the first three characters for a DQUOTE." and "the recipient [...] MUST
/// evaluate the condition as false if the entity-tag [...] does not match [...] using the
/// strong comparison function". A weak tag never matches: the held range is not sent, the
/// origin decides.
#[tokio::test]
async fn if_range_with_a_weak_validator_is_not_answered_from_held_pieces() {
    let origin = Origin::start(|seen| {
        let response = Response::builder()
            .header("cache-control", "max-age=3600")
            .header("etag", "\"w\"");
        represent(seen, response, "\"w\"", identity(LENGTH))
    })
    .await;
    let proxy = Canopy::start(&[("range_offset_limit", "0")]).await;
    let url = origin.url("/weak");
    range(&proxy, &url, "bytes=100-199", &[]).await;
    let strong = range(&proxy, &url, "bytes=110-119", &[("if-range", "\"w\"")]).await;
    assert!(
        is_hit(&strong),
        "a strong match is answered from the held piece"
    );
    let weak = range(&proxy, &url, "bytes=110-119", &[("if-range", "W/\"w\"")]).await;
    assert!(!is_hit(&weak));
    assert_eq!(weak.status, StatusCode::OK, "the origin's whole answer");
    assert_eq!(weak.body, identity(LENGTH));
    assert_eq!(origin.seen()[1].headers["if-range"], "W/\"w\"");
}
