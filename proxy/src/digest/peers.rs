//! Peers' digests: consulted on a miss (Squid's `neighborsDigestSelect`), fetched from a
//! peer the first time a miss needs its digest and again when [`peer_digest`] says so.
//! The reply is hostile input: bounded in size and time, its header and length checked,
//! a digest with too many bits on refused.
//!
//! [`peer_digest`]: super::peer_digest

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

use super::cache_digest::CacheDigest;
use super::key::StoreKey;
use super::peer_digest::{DigestFetchError, FetchedDigest, Lookup};
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
        if digest.claim_fetch(SystemTime::now()) {
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
    tokio::spawn(async move {
        let outcome = match tokio::time::timeout(
            FETCH_TIMEOUT,
            fetch(&host, port, settings, via, MAX_DIGEST_BYTES),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => Err(DigestFetchError::TimedOut {
                secs: FETCH_TIMEOUT.as_secs(),
            }),
        };
        match &outcome {
            Ok(fetched) => tracing::info!(
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
/// application/cache-digest`; reads at most `limit` octets.
pub async fn fetch(
    host: &str,
    port: u16,
    settings: ConnectSettings,
    via: HeaderValue,
    limit: u64,
) -> Result<FetchedDigest, DigestFetchError> {
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
    let request = Request::get(STORE_DIGEST_PATH)
        .header(header::HOST, authority)
        .header(header::ACCEPT, CONTENT_TYPE)
        .header(header::VIA, via)
        .header(header::CONNECTION, "close")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| DigestFetchError::Http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| DigestFetchError::Http(e.to_string()))?;
    let received_at = SystemTime::now();
    check_head(response.status(), response.headers(), limit)?;
    let expires = response
        .headers()
        .get(header::EXPIRES)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
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
    Ok(FetchedDigest {
        digest,
        received_at,
        expires,
        size: body.len() as u64,
    })
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
