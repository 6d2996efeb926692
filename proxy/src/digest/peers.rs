//! Peers' digests: consulted on a miss (Squid's `neighborsDigestSelect`), fetched from a
//! peer the first time a miss needs its digest and again when [`peer_digest`] says so.
//! The reply is hostile input: bounded in size and time, its header and length checked,
//! a digest with too many bits on refused.
//!
//! [`peer_digest`]: super::peer_digest

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

use super::cache_digest::CacheDigest;
use super::key::StoreKey;
use super::peer_digest::{DigestFetchError, Fetched, FetchedDigest, Lookup};
use super::{CONTENT_TYPE, STORE_DIGEST_PATH};
use crate::hierarchy::peers::PeerEntry;
use crate::hierarchy::reach::{self, ConnectSettings};
use crate::runtime::Runtime;

/// The largest digest accepted: a store of about 350 GB at Squid's average object size.
pub const MAX_DIGEST_BYTES: u64 = 16 << 20;
/// How long one fetch may take, connecting included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a request may be sent to a peer on its digest's word: Squid's "hierarchical"
/// requests, as for an ICP query (a GET, without credentials).
pub fn eligible(method: &Method, headers: &http::HeaderMap) -> bool {
    method == Method::GET && !headers.contains_key(header::AUTHORIZATION)
}

/// The peer whose digest says it holds `url`, the fastest to answer ICP first; fetches of
/// the digests that are due are started on the way. Peers with `no_digest`, and those down,
/// are not consulted.
pub fn select<'a>(runtime: &'a Runtime, url: &str) -> Option<&'a PeerEntry> {
    let key = StoreKey::get(url);
    let now = std::time::Instant::now();
    let mut best: Option<(&PeerEntry, Option<Duration>)> = None;
    for peer in &runtime.peers {
        if peer.config.no_digest || !peer.stats.health.available(now, runtime.retry_time) {
            continue;
        }
        let digest = &peer.stats.digest;
        if digest.claim_fetch(SystemTime::now(), &runtime.stats.peer_digest_gate) {
            spawn_fetch(runtime, peer);
        }
        if digest.lookup(&key) != Lookup::Hit {
            continue;
        }
        let rtt = peer.stats.average_reply();
        let faster = match (best, rtt) {
            (None, _) => true,
            (Some((_, Some(leader))), Some(rtt)) => rtt < leader,
            (Some((_, None)), Some(_)) => true,
            (Some(_), None) => false,
        };
        if faster {
            best = Some((peer, rtt));
        }
    }
    best.map(|(peer, _)| peer)
}

/// Fetches `peer`'s digest in the background and records the outcome.
fn spawn_fetch(runtime: &Runtime, peer: &PeerEntry) {
    let settings = ConnectSettings {
        local_address: runtime.config.bind_address.0,
        connect_timeout: Duration::from_millis(
            peer.config
                .connect_timeout_ms
                .unwrap_or(runtime.config.connect_timeout_ms),
        ),
    };
    let (host, port) = (peer.config.host.clone(), peer.config.http_port);
    let (name, stats, via) = (
        peer.config.name.clone(),
        peer.stats.clone(),
        runtime.via.clone(),
    );
    let since = peer.stats.digest.modified_since();
    tokio::spawn(async move {
        let outcome = match tokio::time::timeout(
            FETCH_TIMEOUT,
            fetch(&host, port, settings, (via, since), MAX_DIGEST_BYTES),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => Err(DigestFetchError::TimedOut {
                secs: FETCH_TIMEOUT.as_secs(),
            }),
        };
        match &outcome {
            Ok(Fetched::NotModified { .. }) => {
                tracing::debug!("cache digest of peer {name}: not modified")
            }
            Ok(Fetched::Digest(fetched)) => tracing::info!(
                "cache digest of peer {name}: {} entries, {:.1}% of bits on",
                fetched.digest.count(),
                fetched.digest.percent_on()
            ),
            Err(e) => tracing::warn!("cache digest of peer {name} not usable: {e}"),
        }
        stats.digest.finish(SystemTime::now(), outcome);
    });
}

/// Asks the peer at `host:port` for its digest as Squid asks: origin form, with `Accept:
/// application/cache-digest`, and If-Modified-Since `since` when a digest is held; reads
/// at most `limit` octets.
pub async fn fetch(
    host: &str,
    port: u16,
    settings: ConnectSettings,
    (via, since): (HeaderValue, Option<SystemTime>),
    limit: u64,
) -> Result<Fetched, DigestFetchError> {
    let stream = reach::connect(host, port, settings, None)
        .await
        .map_err(|e| DigestFetchError::Connect(e.describe()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| DigestFetchError::Http(e.to_string()))?;
    tokio::spawn(connection);
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = Request::get(STORE_DIGEST_PATH)
        .header(header::HOST, authority)
        .header(header::ACCEPT, CONTENT_TYPE)
        .header(header::VIA, via)
        .header(header::CONNECTION, "close")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| DigestFetchError::Http(e.to_string()))?;
    if let Some(since) = since {
        if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(since)) {
            request
                .headers_mut()
                .insert(header::IF_MODIFIED_SINCE, value);
        }
    }
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| DigestFetchError::Http(e.to_string()))?;
    let received_at = SystemTime::now();
    let date = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    let expires = date(header::EXPIRES);
    let modified_at = date(header::LAST_MODIFIED).or_else(|| date(header::DATE));
    if response.status() == StatusCode::NOT_MODIFIED && since.is_some() {
        return Ok(Fetched::NotModified {
            received_at,
            expires,
            modified_at,
        });
    }
    check_head(response.status(), response.headers(), limit)?;
    let body = Limited::new(response.into_body(), limit as usize)
        .collect()
        .await
        .map_err(|e| match e.downcast::<http_body_util::LengthLimitError>() {
            Ok(_) => DigestFetchError::TooLarge {
                len: limit + 1,
                limit,
            },
            Err(e) => DigestFetchError::Http(e.to_string()),
        })?
        .to_bytes();
    let digest = CacheDigest::decode(&body)?;
    digest.check_usable()?;
    Ok(Fetched::Digest(FetchedDigest {
        digest: Arc::new(digest),
        received_at,
        expires,
        modified_at,
        size: body.len() as u64,
    }))
}

/// The status, content type and announced length of a digest reply.
fn check_head(
    status: StatusCode,
    headers: &http::HeaderMap,
    limit: u64,
) -> Result<(), DigestFetchError> {
    if status != StatusCode::OK {
        return Err(DigestFetchError::Status {
            status: status.as_u16(),
        });
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case(CONTENT_TYPE) {
        return Err(DigestFetchError::ContentType {
            found: content_type,
        });
    }
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match announced {
        Some(len) if len > limit => Err(DigestFetchError::TooLarge { len, limit }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::cache_digest::{DigestError, HEADER_LEN};
    use std::time::UNIX_EPOCH;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A peer that answers one request with `head` then `body`, and the fetch's outcome
    /// asking If-Modified-Since `since`, with the request the peer received.
    async fn fetch_since(
        head: &str,
        body: Vec<u8>,
        since: Option<SystemTime>,
    ) -> (Result<Fetched, DigestFetchError>, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let head = head.to_owned();
        let peer = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&chunk[..n]);
            }
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
            String::from_utf8_lossy(&request).into_owned()
        });
        let settings = ConnectSettings {
            local_address: None,
            connect_timeout: Duration::from_secs(5),
        };
        let via = HeaderValue::from_static("1.1 test");
        let outcome = fetch("127.0.0.1", port, settings, (via, since), 4096).await;
        let request = peer.await.unwrap();
        assert!(request.starts_with(&format!("GET {STORE_DIGEST_PATH} HTTP/1.1\r\n")));
        assert!(
            request.contains(&format!("accept: {CONTENT_TYPE}\r\n")),
            "{request}"
        );
        (outcome, request)
    }

    /// The digest fetched unconditionally from a peer answering `head` then `body`.
    async fn fetch_from(head: &str, body: Vec<u8>) -> Result<FetchedDigest, DigestFetchError> {
        match fetch_since(head, body, None).await.0? {
            Fetched::Digest(fetched) => Ok(fetched),
            Fetched::NotModified { .. } => panic!("not modified, and nothing was asked"),
        }
    }

    fn ok_head(len: usize) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {len}\r\n\
             Expires: Thu, 01 Jan 2099 00:00:00 GMT\r\n\r\n"
        )
    }

    fn digest_with(keys: usize) -> Vec<u8> {
        let mut digest = CacheDigest::new(100, 5).unwrap();
        for i in 0..keys {
            digest.add(&StoreKey::get(format!("http://a/{i}")));
        }
        digest.encode()
    }

    #[tokio::test]
    async fn a_good_digest_is_taken_with_its_expiry() {
        let body = digest_with(10);
        let fetched = fetch_from(&ok_head(body.len()), body.clone())
            .await
            .unwrap();
        assert!(fetched.digest.contains(&StoreKey::get("http://a/3")));
        assert_eq!(fetched.size, body.len() as u64);
        assert!(fetched.expires.is_some());
    }

    #[tokio::test]
    async fn a_refetch_asks_if_modified_since_and_takes_a_304() {
        let since = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let head = "HTTP/1.1 304 Not Modified\r\nExpires: Thu, 01 Jan 2099 00:00:00 GMT\r\n\r\n";
        let (outcome, request) = fetch_since(head, Vec::new(), Some(since)).await;
        assert!(
            request.contains("if-modified-since: Tue, 14 Nov 2023 22:13:20 GMT\r\n"),
            "{request}"
        );
        match outcome.unwrap() {
            Fetched::NotModified { expires, .. } => assert!(expires.is_some()),
            Fetched::Digest(_) => panic!("a 304 read as a digest"),
        }
        // Without a digest held nothing is asked, and a 304 is no answer.
        let (outcome, request) = fetch_since(head, Vec::new(), None).await;
        assert!(!request.contains("if-modified-since"), "{request}");
        assert_eq!(
            outcome.unwrap_err(),
            DigestFetchError::Status { status: 304 }
        );
    }

    #[tokio::test]
    async fn a_digest_is_dated_by_its_last_modified_else_its_date() {
        let body = digest_with(1);
        let dated = |extra: &str| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n{extra}\r\n",
                body.len()
            )
        };
        let modified = fetch_from(
            &dated("Date: Wed, 15 Nov 2023 00:00:00 GMT\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n"),
            body.clone(),
        )
        .await
        .unwrap();
        let at = |secs| Some(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(modified.modified_at, at(1_700_000_000));
        let undated = fetch_from(&dated("Date: Wed, 15 Nov 2023 00:00:00 GMT\r\n"), body)
            .await
            .unwrap();
        assert_eq!(undated.modified_at, at(1_700_006_400));
    }

    #[tokio::test]
    async fn a_digest_with_too_many_bits_on_is_refused() {
        // 500 keys in a mask sized for 100 turn nearly every bit on.
        let body = digest_with(500);
        let refused = fetch_from(&ok_head(body.len()), body).await.unwrap_err();
        assert!(
            matches!(refused, DigestFetchError::Digest(DigestError::TooManyBitsOn { percent_on }) if percent_on > 65.0),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn hostile_replies_are_refused_with_what_was_wrong() {
        let body = digest_with(1);
        let not_a_digest = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        assert_eq!(
            fetch_from(&not_a_digest, body.clone()).await.unwrap_err(),
            DigestFetchError::ContentType {
                found: "text/html".to_owned()
            }
        );
        let missing = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            fetch_from(missing, Vec::new()).await.unwrap_err(),
            DigestFetchError::Status { status: 404 }
        );
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: 99999999999\r\n\r\n"
        );
        assert_eq!(
            fetch_from(&huge, Vec::new()).await.unwrap_err(),
            DigestFetchError::TooLarge {
                len: 99_999_999_999,
                limit: 4096
            }
        );
        // Chunked, so nothing announces the size: the limit stops the read.
        let endless = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let mut chunks = Vec::new();
        for _ in 0..10 {
            chunks.extend_from_slice(b"400\r\n");
            chunks.extend_from_slice(&[0u8; 0x400]);
            chunks.extend_from_slice(b"\r\n");
        }
        assert!(matches!(
            fetch_from(&endless, chunks).await.unwrap_err(),
            DigestFetchError::TooLarge { limit: 4096, .. }
        ));
        // A mask shorter than its header says.
        let short = body[..body.len() - 1].to_vec();
        assert!(matches!(
            fetch_from(&ok_head(short.len()), short).await.unwrap_err(),
            DigestFetchError::Digest(DigestError::MaskLengthMismatch { .. })
        ));
        // A header that asks for a mask no capacity gives.
        let mut lying = body.clone();
        lying[16..20].copy_from_slice(&1_000u32.to_be_bytes());
        assert!(matches!(
            fetch_from(&ok_head(lying.len()), lying).await.unwrap_err(),
            DigestFetchError::Digest(DigestError::MaskSizeMismatch { .. })
        ));
        let header_only = body[..HEADER_LEN - 1].to_vec();
        assert!(matches!(
            fetch_from(&ok_head(header_only.len()), header_only)
                .await
                .unwrap_err(),
            DigestFetchError::Digest(DigestError::TooShort { .. })
        ));
    }
}
