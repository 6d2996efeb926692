//! TRACE and OPTIONS and their Max-Forwards (RFC 9110 §7.6.2): at 0 this proxy is the
//! final recipient and answers itself; above 0 the request goes on with one hop fewer.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response};

use crate::http::body::{empty_body, full_body, ProxyBody};

/// What a TRACE or OPTIONS request's Max-Forwards asks of this proxy.
#[derive(Debug, PartialEq)]
pub enum Hops {
    /// No Max-Forwards: forwarded as it is.
    Unlimited,
    /// Max-Forwards: 0: answered here, never forwarded.
    AnswerHere,
    /// Forwarded with this Max-Forwards, one less than received.
    Onward(HeaderValue),
}

/// A Max-Forwards that is not one number.
#[derive(Debug, thiserror::Error)]
#[error("Max-Forwards must be a single number of hops, not {value:?}")]
pub struct BadMaxForwards {
    pub value: String,
}

/// Whether Max-Forwards applies to `method` at all.
pub fn applies_to(method: &Method) -> bool {
    method == Method::TRACE || method == Method::OPTIONS
}

/// What `headers`' Max-Forwards says, for a TRACE or OPTIONS request.
pub fn hops(headers: &HeaderMap) -> Result<Hops, BadMaxForwards> {
    let mut values = headers.get_all(header::MAX_FORWARDS).iter();
    let Some(value) = values.next() else {
        return Ok(Hops::Unlimited);
    };
    let bad = || BadMaxForwards {
        value: headers
            .get_all(header::MAX_FORWARDS)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let digits = value.as_bytes();
    if values.next().is_some() || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    // 1*DIGIT has no upper bound: a number too long for u64 is as good as unlimited.
    let count = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    Ok(match count {
        0 => Hops::AnswerHere,
        n => Hops::Onward(HeaderValue::from(n - 1)),
    })
}

/// Fields a TRACE echo leaves out: credentials must not be reflected to whatever script
/// can read the response (cross-site tracing).
fn is_credential(name: &header::HeaderName) -> bool {
    name == header::COOKIE || name == header::AUTHORIZATION || name == header::PROXY_AUTHORIZATION
}

/// The proxy's own answer to a TRACE or OPTIONS that ends here. TRACE echoes the request
/// as received (`message/http`), credentials left out; OPTIONS says what methods the
/// proxy takes.
pub fn answer(parts: &Parts) -> Response<ProxyBody> {
    let mut response = if parts.method == Method::TRACE {
        let mut echo = format!("TRACE {} {:?}\r\n", parts.uri, parts.version).into_bytes();
        for (name, value) in parts.headers.iter().filter(|(n, _)| !is_credential(n)) {
            echo.extend_from_slice(name.as_str().as_bytes());
            echo.extend_from_slice(b": ");
            echo.extend_from_slice(value.as_bytes());
            echo.extend_from_slice(b"\r\n");
        }
        echo.extend_from_slice(b"\r\n");
        let mut response = Response::new(full_body(Bytes::from(echo)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("message/http"),
        );
        response
    } else {
        let mut response = Response::new(empty_body());
        response.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static(
                "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE, CONNECT",
            ),
        );
        response
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn with(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::MAX_FORWARDS, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn max_forwards_is_counted_down_to_zero() {
        assert_eq!(hops(&with(&[])).unwrap(), Hops::Unlimited);
        assert_eq!(hops(&with(&["0"])).unwrap(), Hops::AnswerHere);
        assert_eq!(hops(&with(&["00"])).unwrap(), Hops::AnswerHere);
        assert_eq!(
            hops(&with(&["5"])).unwrap(),
            Hops::Onward(HeaderValue::from_static("4"))
        );
        let huge = hops(&with(&["99999999999999999999999"])).unwrap();
        assert_eq!(huge, Hops::Onward(HeaderValue::from(u64::MAX - 1)));
        for bad in [&["-1"][..], &["1.5"], &[""], &["1", "2"], &[" 1"]] {
            let e = hops(&with(bad)).unwrap_err();
            assert!(e.to_string().contains("single number"), "{e}");
        }
    }

    #[test]
    fn trace_echoes_the_request_without_credentials() {
        let (parts, ()) = Request::builder()
            .method(Method::TRACE)
            .uri("http://example.com/a")
            .header("x-probe", "1")
            .header("cookie", "secret")
            .header("authorization", "Basic secret")
            .header("proxy-authorization", "Basic secret")
            .body(())
            .unwrap()
            .into_parts();
        let response = answer(&parts);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "message/http");
        let body = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(
            response.into_body(),
        ))
        .unwrap()
        .unwrap()
        .to_bytes();
        assert_eq!(
            body,
            "TRACE http://example.com/a HTTP/1.1\r\nx-probe: 1\r\n\r\n"
        );
    }
}
