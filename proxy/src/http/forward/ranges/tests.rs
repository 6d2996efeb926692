use http::Request;

use super::*;

/// The digits 0..=9 repeated, LENGTH bytes, in chunks of `chunk` bytes.
const LENGTH: usize = 100;

fn representation() -> Bytes {
    (0..LENGTH)
        .map(|i| b'0' + (i % 10) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn chunked(chunk: usize) -> ProxyBody {
    let chunks: Vec<Result<Frame<Bytes>, BoxError>> = representation()
        .chunks(chunk)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync()
}

fn request(method: Method, fields: &[(&str, &str)]) -> Parts {
    let mut builder = Request::builder().method(method).uri("http://example.com/");
    for (name, value) in fields {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

fn stored(body: ProxyBody) -> Response<ProxyBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(LENGTH));
    headers.insert(header::ETAG, HeaderValue::from_static("\"t\""));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

async fn read(response: Response<ProxyBody>) -> (StatusCode, HeaderMap, Bytes) {
    let (head, body) = response.into_parts();
    let bytes = body.collect().await.expect("a whole body").to_bytes();
    (head.status, head.headers, bytes)
}

#[tokio::test]
async fn a_range_is_cut_from_a_body_whatever_its_chunks() {
    for chunk in [1, 7, 10, 33, LENGTH] {
        let parts = request(Method::GET, &[("range", "bytes=15-24")]);
        let (status, headers, body) = read(cut(&parts, stored(chunked(chunk)), false)).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "chunks of {chunk}");
        assert_eq!(headers[header::CONTENT_RANGE], "bytes 15-24/100");
        assert_eq!(headers[header::CONTENT_LENGTH], "10");
        assert_eq!(body, representation().slice(15..25), "chunks of {chunk}");
    }
}

/// RFC 9110 §14.6: "A client that receives a multipart response MUST inspect the
/// Content-Range header field present in each body part to determine which range is
/// contained in that body part". Parts go in ascending order, which a body read from disk
/// or still arriving can give in one pass (a deviation from the SHOULD on request order).
#[tokio::test]
async fn several_ranges_make_a_multipart_body_of_the_announced_length() {
    for chunk in [3, LENGTH] {
        let parts = request(Method::GET, &[("range", "bytes=90-, 0-1")]);
        let (status, headers, body) = read(cut(&parts, stored(chunked(chunk)), false)).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        let content_type = headers[header::CONTENT_TYPE].to_str().unwrap();
        let boundary = content_type
            .strip_prefix("multipart/byteranges; boundary=")
            .unwrap();
        let expected = format!(
            "--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/100\r\n\r\n01\
             \r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 90-99/100\r\n\r\n\
             0123456789\r\n--{boundary}--\r\n"
        );
        assert_eq!(body, expected.as_bytes());
        assert_eq!(headers[header::CONTENT_LENGTH], body.len().to_string());
        assert!(!headers.contains_key(header::CONTENT_RANGE));
    }
}

#[tokio::test]
async fn plain_requests_heads_and_responses_of_unknown_length_are_left_whole() {
    let whole = |parts: Parts, response| async move { read(cut(&parts, response, false)).await };
    let (status, _, body) = whole(request(Method::GET, &[]), stored(chunked(10))).await;
    assert_eq!((status, body), (StatusCode::OK, representation()));
    let head = request(Method::HEAD, &[("range", "bytes=0-1")]);
    assert_eq!(whole(head, stored(chunked(10))).await.0, StatusCode::OK);
    let mut unknown = stored(chunked(10));
    unknown.headers_mut().remove(header::CONTENT_LENGTH);
    let ranged = request(Method::GET, &[("range", "bytes=0-1")]);
    assert_eq!(whole(ranged, unknown).await.2, representation());
}

#[tokio::test]
async fn a_body_that_ends_before_the_range_is_an_error() {
    let parts = request(Method::GET, &[("range", "bytes=10-19")]);
    let mut short = stored(chunked(10));
    short
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(1000));
    let parts_past = request(Method::GET, &[("range", "bytes=500-509")]);
    let (_, body) = cut(&parts_past, short, false).into_parts();
    assert!(body.collect().await.is_err());
    let (status, _, body) = read(cut(&parts, stored(chunked(10)), false)).await;
    assert_eq!((status, body.len()), (StatusCode::PARTIAL_CONTENT, 10));
}

#[test]
fn a_range_miss_is_fetched_whole_within_the_offset_limit_and_as_asked_beyond() {
    let miss = |range: &str, limit| range_miss(&request(Method::GET, &[("range", range)]), limit);
    assert_eq!(miss("bytes=0-99", 1 << 20), RangeMiss::Whole);
    assert_eq!(miss("bytes=1048576-", 1 << 20), RangeMiss::Whole);
    assert_eq!(miss("bytes=1048577-", 1 << 20), RangeMiss::AsAsked);
    assert_eq!(miss("bytes=-100", 1 << 20), RangeMiss::AsAsked);
    assert_eq!(miss("bytes=0-99", 0), RangeMiss::AsAsked);
    assert_eq!(miss("items=0-99", 0), RangeMiss::Whole, "an ignored Range");
}
