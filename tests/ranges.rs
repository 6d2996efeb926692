//! Range requests end to end (RFC 9110 §14, RFC 9111 §3.3–3.4): answered from a stored
//! complete response (in memory, and from disk after a restart), a range miss fetched whole
//! or passed upstream as asked (`range_offset_limit`), 206 responses kept as partial content,
//! combined under one strong validator and never across two.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Response, StatusCode};

use common::*;

const LENGTH: usize = 1000;

/// Bytes that differ by position, so that a byte out of place shows.
fn body(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn slice(first: usize, last: usize) -> Bytes {
    body(LENGTH).slice(first..=last)
}

/// The one range of a `bytes=first-last` request, as a test origin reads it.
fn asked_range(seen: &Seen) -> Option<(usize, usize)> {
    let range = seen.headers.get("range")?.to_str().ok()?;
    let (first, last) = range.strip_prefix("bytes=")?.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// An origin of fresh objects, LENGTH bytes, tagged `etag`: it answers a Range with 206 (and
/// with 200 when If-Range names another tag), or ignores it when `ranges` is false.
fn answer(seen: &Seen, etag: &str, ranges: bool) -> Response<OriginBody> {
    let response = Response::builder()
        .header("cache-control", "max-age=3600")
        .header("etag", etag)
        .header("content-type", "application/octet-stream");
    let if_range_holds = seen
        .headers
        .get("if-range")
        .is_none_or(|tag| tag.as_bytes() == etag.as_bytes());
    match asked_range(seen).filter(|_| ranges && if_range_holds) {
        Some((first, last)) => response
            .status(206)
            .header("content-range", format!("bytes {first}-{last}/{LENGTH}"))
            .body(full(slice(first, last)))
            .unwrap(),
        None => response.body(full(body(LENGTH))).unwrap(),
    }
}

async fn origin(ranges: bool) -> Origin {
    Origin::start(move |seen| answer(seen, "\"v1\"", ranges)).await
}

fn is_hit(fetched: &Fetched) -> bool {
    fetched.header("x-cache").starts_with("HIT")
}

async fn range(proxy: &Canopy, url: &str, range: &str) -> Fetched {
    proxy.request("GET", url, &[("range", range)]).await
}

/// Waits until the whole object is stored: `only-if-cached` answers 504 until then.
async fn wait_until_stored(proxy: &Canopy, url: &str) {
    wait_for("the object stored", Duration::from_secs(10), || async {
        let only = [("cache-control", "only-if-cached")];
        proxy.request("GET", url, &only).await.status == StatusCode::OK
    })
    .await;
}

/// A proxy that has stored `/complete` whole, from an origin that ignores Range.
async fn stored_complete() -> (Origin, Canopy, String) {
    let origin = origin(false).await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/complete");
    assert_eq!(proxy.get(&url).await.body, body(LENGTH));
    (origin, proxy, url)
}

#[tokio::test]
async fn single_ranges_are_answered_from_a_stored_complete_response() {
    let (origin, proxy, url) = stored_complete().await;
    for (asked, first, last) in [
        ("bytes=0-99", 0, 99),
        ("bytes=900-", 900, 999),
        ("bytes=-10", 990, 999),
        ("bytes=995-5000", 995, 999),
    ] {
        let fetched = range(&proxy, &url, asked).await;
        assert_eq!(fetched.status, StatusCode::PARTIAL_CONTENT, "{asked}");
        assert!(is_hit(&fetched), "{asked}");
        assert_eq!(
            fetched.header("content-range"),
            format!("bytes {first}-{last}/{LENGTH}")
        );
        assert_eq!(
            fetched.header("content-length"),
            (last - first + 1).to_string()
        );
        assert_eq!(fetched.body, slice(first, last), "{asked}");
    }
    let whole = range(&proxy, &url, "bytes=0-").await;
    assert_eq!(whole.status, StatusCode::OK, "the whole range is a 200");
    assert_eq!(whole.body, body(LENGTH));
    assert_eq!(origin.count("/complete"), 1);
}

#[tokio::test]
async fn unsatisfiable_ranges_get_416_and_other_methods_or_units_the_whole() {
    let (origin, proxy, url) = stored_complete().await;
    let past = range(&proxy, &url, "bytes=1000-").await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(past.header("content-range"), "bytes */1000");
    assert!(past.body.is_empty());
    let head = proxy.request("HEAD", &url, &[("range", "bytes=0-9")]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), "1000");
    let items = range(&proxy, &url, "items=0-9").await;
    assert_eq!(items.status, StatusCode::OK);
    assert_eq!(items.body, body(LENGTH));
    assert_eq!(origin.count("/complete"), 1);
}

#[tokio::test]
async fn several_ranges_are_answered_as_multipart_byteranges() {
    let (origin, proxy, url) = stored_complete().await;
    let fetched = range(&proxy, &url, "bytes=500-509, 0-9").await;
    assert_eq!(fetched.status, StatusCode::PARTIAL_CONTENT);
    let content_type = fetched.header("content-type");
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("not multipart: {content_type}"));
    assert_eq!(
        fetched.header("content-length"),
        fetched.body.len().to_string()
    );
    let mut expected = Vec::new();
    for (i, (first, last)) in [(0, 9), (500, 509)].into_iter().enumerate() {
        let before = if i == 0 { "" } else { "\r\n" };
        expected.extend_from_slice(
            format!(
                "{before}--{boundary}\r\nContent-Type: application/octet-stream\r\n\
                 Content-Range: bytes {first}-{last}/1000\r\n\r\n"
            )
            .as_bytes(),
        );
        expected.extend_from_slice(&slice(first, last));
    }
    expected.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    assert_eq!(fetched.body, Bytes::from(expected));
    assert_eq!(origin.count("/complete"), 1);
}

#[tokio::test]
async fn if_range_gets_the_range_when_it_names_the_stored_tag_and_the_whole_otherwise() {
    let (origin, proxy, url) = stored_complete().await;
    let same = [("range", "bytes=0-9"), ("if-range", "\"v1\"")];
    let fetched = proxy.request("GET", &url, &same).await;
    assert_eq!(fetched.status, StatusCode::PARTIAL_CONTENT);
    let other = [("range", "bytes=0-9"), ("if-range", "\"v0\"")];
    let fetched = proxy.request("GET", &url, &other).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body, body(LENGTH));
    assert_eq!(origin.count("/complete"), 1);
}

#[tokio::test]
async fn a_range_miss_near_the_start_fetches_the_whole_object_and_stores_it() {
    let origin = origin(true).await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/near");
    let fetched = range(&proxy, &url, "bytes=100-199").await;
    assert_eq!(fetched.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(fetched.header("content-range"), "bytes 100-199/1000");
    assert_eq!(fetched.body, slice(100, 199));
    let seen = origin.seen();
    assert!(
        seen[0].headers.get("range").is_none(),
        "fetched whole: {seen:?}"
    );
    wait_until_stored(&proxy, &url).await;
    let later = range(&proxy, &url, "bytes=-5").await;
    assert!(is_hit(&later));
    assert_eq!(later.body, slice(995, 999));
    assert_eq!(origin.count("/near"), 1);
}

#[tokio::test]
async fn a_range_past_range_offset_limit_is_passed_upstream_and_kept_as_partial_content() {
    let origin = origin(true).await;
    let proxy = Canopy::start(&[("range_offset_limit", "0")]).await;
    let url = origin.url("/far");
    let first = range(&proxy, &url, "bytes=100-199").await;
    assert_eq!(first.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(first.body, slice(100, 199));
    assert_eq!(
        origin.seen()[0].headers["range"],
        "bytes=100-199",
        "passed as asked"
    );
    // Within the range held: answered here.
    let within = range(&proxy, &url, "bytes=120-149").await;
    assert_eq!(within.status, StatusCode::PARTIAL_CONTENT);
    assert!(is_hit(&within));
    assert_eq!(within.header("content-range"), "bytes 120-149/1000");
    assert_eq!(within.body, slice(120, 149));
    assert_eq!(origin.count("/far"), 1);
    // Outside it: asked upstream, and combined with what is held.
    let before = range(&proxy, &url, "bytes=0-99").await;
    assert!(!is_hit(&before));
    assert_eq!(before.body, slice(0, 99));
    assert_eq!(origin.count("/far"), 2);
    let across = range(&proxy, &url, "bytes=50-149").await;
    assert!(is_hit(&across), "the two ranges combined");
    assert_eq!(across.body, slice(50, 149));
    // The last range makes the whole: a 200 for a plain request from then on.
    range(&proxy, &url, "bytes=200-999").await;
    assert_eq!(origin.count("/far"), 3);
    wait_until_stored(&proxy, &url).await;
    let whole = proxy.get(&url).await;
    assert!(is_hit(&whole));
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.body, body(LENGTH));
    assert_eq!(origin.count("/far"), 3);
}

#[tokio::test]
async fn a_206_of_another_representation_is_not_combined_with_the_held_one() {
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let origin = Origin::start(move |seen| {
        let n = counter.fetch_add(1, SeqCst) + 1;
        answer(seen, &format!("\"v{n}\""), true)
    })
    .await;
    let proxy = Canopy::start(&[("range_offset_limit", "0")]).await;
    let url = origin.url("/changing");
    range(&proxy, &url, "bytes=0-99").await;
    let second = range(&proxy, &url, "bytes=100-199").await;
    assert_eq!(second.header("etag"), "\"v2\"");
    let again = range(&proxy, &url, "bytes=0-149").await;
    assert!(!is_hit(&again), "v1's bytes are not combined with v2's");
    assert_eq!(again.header("etag"), "\"v3\"");
    assert_eq!(served.load(SeqCst), 3);
}

#[tokio::test]
async fn if_range_of_a_range_passed_upstream_reaches_the_origin() {
    let origin = origin(true).await;
    let proxy = Canopy::start(&[("range_offset_limit", "0")]).await;
    let url = origin.url("/conditional");
    let headers = [("range", "bytes=10-19"), ("if-range", "\"v0\"")];
    let fetched = proxy.request("GET", &url, &headers).await;
    assert_eq!(origin.seen()[0].headers["if-range"], "\"v0\"");
    assert_eq!(fetched.status, StatusCode::OK, "the origin's whole answer");
    assert_eq!(fetched.body, body(LENGTH));
}

/// An origin of an object larger than `max_object_size_in_memory` (kept on disk only).
const LARGE: usize = 2048 * 1024;

#[tokio::test]
async fn ranges_are_answered_from_disk_after_a_restart() {
    let origin = Origin::start(|seen| {
        let len = if seen.path == "/large" { LARGE } else { LENGTH };
        Response::builder()
            .header("cache-control", "max-age=3600")
            .body(full(body(len)))
            .unwrap()
    })
    .await;
    let mut proxy = Canopy::start(&[]).await;
    let (large, small) = (origin.url("/large"), origin.url("/small"));
    assert_eq!(proxy.get(&large).await.body.len(), LARGE);
    assert_eq!(proxy.get(&small).await.body.len(), LENGTH);
    wait_for("both objects on disk", Duration::from_secs(10), || async {
        proxy
            .stats()
            .await
            .disk
            .is_some_and(|disk| disk.writes >= 2)
    })
    .await;
    proxy.kill();
    proxy.restart().await;
    let fetched = range(&proxy, &large, "bytes=1000000-1000099").await;
    assert_eq!(fetched.status, StatusCode::PARTIAL_CONTENT);
    assert!(is_hit(&fetched));
    assert_eq!(fetched.body, body(LARGE).slice(1_000_000..1_000_100));
    let suffix = range(&proxy, &large, "bytes=-3").await;
    assert_eq!(suffix.body, body(LARGE).slice(LARGE - 3..));
    let past = range(&proxy, &large, &format!("bytes={LARGE}-")).await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(past.header("content-range"), format!("bytes */{LARGE}"));
    let small_range = range(&proxy, &small, "bytes=10-19").await;
    assert_eq!(small_range.status, StatusCode::PARTIAL_CONTENT);
    assert!(is_hit(&small_range));
    assert_eq!(small_range.body, slice(10, 19));
    assert_eq!(origin.count("/large"), 1);
    assert_eq!(origin.count("/small"), 1);
}
