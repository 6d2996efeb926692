//! The object a HIT_OBJ reply carries inline: a whole HTTP/1.1 response (status line,
//! fields, body), as Squid 1.1 put its stored object in the datagram. Written by the
//! responder from a stored response, read back by the querier with the checks any upstream
//! response gets.

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use crate::cache::policy;
use crate::cache::store::Stored;
use crate::http::headers::{remove_hop_by_hop, write_head};

/// Fields a peer's inline object may carry at most, as many as a response head read from a
/// socket may (`hierarchy/upstream.rs` allows 1,000; a datagram holds far fewer).
const MAX_FIELDS: usize = 100;

/// `stored` as the octets of a HIT_OBJ object, with its current age in `Age` and its
/// length in `Content-Length`.
pub fn write(stored: &Stored, now: SystemTime) -> Vec<u8> {
    let mut headers = stored.headers();
    remove_hop_by_hop(&mut headers);
    headers.remove(header::TRANSFER_ENCODING);
    let age = policy::current_age(&headers, &stored.times(), now);
    headers.insert(header::AGE, policy::age_header(age));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(stored.body.len()));
    let mut object = Vec::with_capacity(stored.body.len() + 512);
    write_head(&mut object, stored.status, &headers);
    object.extend_from_slice(&stored.body);
    object
}

/// An inline object read back: the response a peer sent inside its ICP reply.
#[derive(Debug)]
pub struct InlineResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why an inline object is not used (the peer is then asked over HTTP, as for a HIT).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{len} bytes, more than icp_hit_obj_max_bytes ({max})")]
    TooLarge { len: usize, max: u64 },
    #[error("not an HTTP/1 response head: {0}")]
    Malformed(String),
    #[error("Content-Length {declared} but {carried} bytes of body")]
    LengthMismatch { declared: String, carried: usize },
    #[error("status {0}: only 200 is taken inline")]
    Status(u16),
    #[error("it varies on request fields the ICP query did not carry")]
    Varies,
    #[error("a shared cache may not store it")]
    NotStorable,
}

/// Parses `object` and checks it as any upstream response is checked: its size within
/// `max`, a well-formed head, a body of the length it declares, and a status and fields
/// this cache may store. A response with Vary is refused: ICP carries only the URL, so the
/// variant cannot be known to match the request.
pub fn read(
    object: &[u8],
    max: u64,
    request: &HeaderMap,
    targets: &[HeaderName],
) -> Result<InlineResponse, Refused> {
    if object.len() as u64 > max {
        return Err(Refused::TooLarge {
            len: object.len(),
            max,
        });
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut head = httparse::Response::new(&mut fields);
    let head_len = match head.parse(object) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(Refused::Malformed("incomplete".into())),
        Err(e) => return Err(Refused::Malformed(e.to_string())),
    };
    let status = head
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| Refused::Malformed("no status".into()))?;
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for field in head.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| Refused::Malformed(format!("field name {:?}", field.name)))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| Refused::Malformed(format!("value of {name}")))?;
        headers.append(name, value);
    }
    let body = Bytes::copy_from_slice(&object[head_len..]);
    if let Some(declared) = headers.get(header::CONTENT_LENGTH) {
        if declared.to_str().ok().and_then(|d| d.parse::<usize>().ok()) != Some(body.len()) {
            return Err(Refused::LengthMismatch {
                declared: String::from_utf8_lossy(declared.as_bytes()).into_owned(),
                carried: body.len(),
            });
        }
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(Refused::Malformed(
            "Transfer-Encoding in an inline object".into(),
        ));
    }
    if status != StatusCode::OK {
        return Err(Refused::Status(status.as_u16()));
    }
    if headers.contains_key(header::VARY) {
        return Err(Refused::Varies);
    }
    if !policy::is_storable(&http::Method::GET, request, status, &headers, targets) {
        return Err(Refused::NotStorable);
    }
    Ok(InlineResponse {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::StoredTimes;

    fn stored(fields: &[(&str, &str)], body: &'static [u8]) -> Stored {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let now = SystemTime::now();
        Stored::new(
            StatusCode::OK,
            headers,
            Bytes::from_static(body),
            StoredTimes {
                request_time: now,
                response_time: now,
            },
            None,
            &[],
        )
    }

    #[test]
    fn a_stored_response_reads_back_with_its_fields_age_and_body() {
        let object = write(
            &stored(
                &[
                    ("cache-control", "max-age=600"),
                    ("connection", "x-hop"),
                    ("x-hop", "1"),
                ],
                b"hello",
            ),
            SystemTime::now(),
        );
        let text = String::from_utf8_lossy(&object);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        let back = read(&object, 4096, &HeaderMap::new(), &[]).expect("reads back");
        assert_eq!(back.body, "hello");
        assert_eq!(back.headers["cache-control"], "max-age=600");
        assert_eq!(back.headers["content-length"], "5");
        assert_eq!(back.headers["age"], "0");
        assert!(
            !back.headers.contains_key("x-hop"),
            "hop-by-hop fields stay home"
        );
    }

    #[test]
    fn objects_a_cache_would_not_take_from_upstream_are_refused() {
        let ok = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nhi";
        let none = HeaderMap::new();
        assert!(read(ok.as_bytes(), 4096, &none, &[]).is_ok());
        assert_eq!(
            read(ok.as_bytes(), 10, &none, &[]).unwrap_err(),
            Refused::TooLarge {
                len: ok.len(),
                max: 10
            }
        );
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi",
                "LengthMismatch",
            ),
            ("HTTP/1.1 200 OK\r\nCache-Control: max-age", "Malformed"),
            ("garbage", "Malformed"),
            (
                "HTTP/1.1 404 Not Found\r\nCache-Control: max-age=60\r\n\r\n",
                "Status",
            ),
            (
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nVary: Accept\r\n\r\n",
                "Varies",
            ),
            (
                "HTTP/1.1 200 OK\r\nCache-Control: no-store\r\n\r\n",
                "NotStorable",
            ),
            (
                "HTTP/1.1 200 OK\r\nCache-Control: private\r\n\r\n",
                "NotStorable",
            ),
        ];
        for (object, why) in cases {
            let refused = read(object.as_bytes(), 4096, &none, &[]).unwrap_err();
            assert!(
                format!("{refused:?}").starts_with(why),
                "{object:?}: {refused:?}"
            );
        }
    }
}
