//! The answers to a peer's HTCP messages, as Squid's `htcpHandleTstRequest` and
//! `htcpHandleClr` give them: TST answered HIT or MISS for the variant the query's request
//! headers select; CLR removes what is stored for the URL. A sender the access lists refuse
//! gets no reply at all.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Uri};

use crate::cache::disk_tier::DiskTier;
use crate::cache::key::cache_key;
use crate::cache::policy;
use crate::cache::store::{Store, Stored};
use crate::hierarchy::peers;
use crate::htcp::codec::{ClrReason, Detail, HtcpMessage, ResponseCode, Role, Specifier};
use crate::htcp::querier;
use crate::htcp::socket::HtcpSocket;
use crate::runtime::{HeldForPeers, Runtime, Shared};

/// The reply to a TST query from `from`; `None` when no reply is due (a sender
/// `htcp_access` refuses, a query that wants none, one whose URL cannot be read).
pub fn answer_tst(
    runtime: &Runtime,
    (store, disk): (&Store, Option<&DiskTier>),
    from: SocketAddr,
    query: &HtcpMessage,
    specifier: &Specifier,
) -> Option<HtcpMessage> {
    let totals = &runtime.stats.htcp;
    totals.tst_received.fetch_add(1, Relaxed);
    if !matches!(
        query.role,
        Role::Query {
            response_wanted: true
        }
    ) {
        return None;
    }
    let ip = peers::canonical(from.ip());
    if peers::by_address(&runtime.peers, ip).is_none() && !runtime.config.htcp_access.contains(ip) {
        totals.denied.fetch_add(1, Relaxed);
        tracing::debug!(%from, "HTCP TST from a sender not in htcp_access: no reply");
        return None;
    }
    let uri = http_url(&specifier.url)?;
    let request = request_headers(&specifier.request_headers);
    let held = match specifier.method.as_str() {
        "GET" | "HEAD" => runtime.fresh_for_peers(store, disk, &cache_key(&uri), &request),
        _ => None,
    };
    Some(match held {
        Some(held) => {
            totals.answered_hit.fetch_add(1, Relaxed);
            let detail = match held {
                HeldForPeers::InMemory(stored) => hit_detail(&stored),
                // Its headers are on disk, not read to answer a peer: three empty blocks.
                HeldForPeers::OnDisk => Detail::default(),
            };
            HtcpMessage::tst_hit(query.layout, query.msg_id, detail)
        }
        None => {
            totals.answered_miss.fetch_add(1, Relaxed);
            HtcpMessage::tst_miss(query.layout, query.msg_id)
        }
    })
}

/// Carries out a CLR from `from`: every stored variant of the URL removed, from memory and
/// disk, and the CLR passed on to the `forward_clr` peers, held or not (as Squid). Answered
/// only when the query asks (F1), as Squid: 0 removed, 2 not held.
pub async fn clear(
    htcp: &HtcpSocket,
    shared: &Shared,
    runtime: &Runtime,
    from: SocketAddr,
    query: &HtcpMessage,
    (reason, specifier): (ClrReason, &Specifier),
) -> Option<HtcpMessage> {
    let totals = &runtime.stats.htcp;
    totals.clr_received.fetch_add(1, Relaxed);
    let ip = peers::canonical(from.ip());
    if !runtime.config.htcp_clr_access.contains(ip) {
        totals.denied.fetch_add(1, Relaxed);
        tracing::info!(%from, url = %specifier.url, "HTCP CLR from a sender not in htcp_clr_access: ignored");
        return None;
    }
    let uri = http_url(&specifier.url)?;
    let removed = shared.remove_everywhere(&cache_key(&uri)).await;
    if removed {
        totals.clr_purged.fetch_add(1, Relaxed);
    }
    tracing::info!(%from, url = %specifier.url, removed, "HTCP CLR");
    querier::forward_clr(
        htcp,
        runtime,
        SocketAddr::new(ip, from.port()),
        reason,
        specifier,
    )
    .await;
    let wanted = matches!(
        query.role,
        Role::Query {
            response_wanted: true
        }
    );
    wanted.then(|| {
        let response = if removed {
            ResponseCode::ZERO
        } else {
            ResponseCode::CLR_NOT_FOUND
        };
        HtcpMessage::clr_reply(query.layout, query.msg_id, response)
    })
}

/// An absolute `http://` URL, the only kind a cache holds for a peer.
fn http_url(url: &str) -> Option<Uri> {
    let uri: Uri = url.parse().ok()?;
    (uri.scheme_str() == Some("http") && uri.authority().is_some()).then_some(uri)
}

/// The query's header lines as a request's fields; lines that are not fields are left out.
pub fn request_headers(lines: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    headers
}

/// What Squid's HIT says of the object: its `Age` in the response headers, its `Expires`
/// and `Last-Modified` in the entity headers.
fn hit_detail(stored: &Stored) -> Detail {
    let headers = stored.headers();
    let age = policy::current_age(&headers, &stored.times(), SystemTime::now());
    let mut entity_headers = Vec::new();
    for (name, label) in [
        (header::EXPIRES, "Expires"),
        (header::LAST_MODIFIED, "Last-Modified"),
    ] {
        if let Some(value) = headers.get(name) {
            entity_headers.extend_from_slice(label.as_bytes());
            entity_headers.extend_from_slice(b": ");
            entity_headers.extend_from_slice(value.as_bytes());
            entity_headers.extend_from_slice(b"\r\n");
        }
    }
    Detail {
        response_headers: format!("Age: {}\r\n", age.as_secs()).into_bytes(),
        entity_headers,
        cache_headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;
    use http::StatusCode;

    use crate::cache::policy::StoredTimes;
    use crate::htcp::codec::{HtcpLayout, OpData};
    use canopy_config::config::{Config, Peer};

    const URL: &str = "http://example.com/v";

    /// A proxy with peer 10.0.0.2, CLR allowed from 10.0.0.9, holding variant "a" of URL.
    fn shared() -> std::sync::Arc<Shared> {
        let mut config = Config::default();
        config.peers.push(Peer {
            name: "p".into(),
            host: "10.0.0.2".into(),
            ..Peer::default()
        });
        config.htcp_clr_access = "10.0.0.9".parse().unwrap();
        let shared = Shared::for_tests(config);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=600"),
        );
        headers.insert(header::VARY, HeaderValue::from_static("X-Variant"));
        headers.insert(
            header::EXPIRES,
            HeaderValue::from_static("Thu, 01 Jan 2099 00:00:00 GMT"),
        );
        let now = SystemTime::now();
        let variant = vec![(HeaderName::from_static("x-variant"), Some("a".to_owned()))];
        shared.store.load().insert(
            URL,
            Stored::new(
                StatusCode::OK,
                headers,
                Bytes::from_static(b"a"),
                StoredTimes {
                    request_time: now,
                    response_time: now,
                },
                Some(variant),
                &[],
            ),
        );
        shared
    }

    fn tst(shared: &Shared, from: &str, headers: &[u8]) -> Option<HtcpMessage> {
        let specifier = Specifier::get(URL, headers.to_vec());
        let query = HtcpMessage::tst_query(HtcpLayout::Rfc, 5, specifier.clone());
        let runtime = shared.runtime.load();
        answer_tst(
            &runtime,
            (&shared.store.load(), None),
            from.parse().unwrap(),
            &query,
            &specifier,
        )
    }

    #[test]
    fn tst_is_answered_for_the_variant_its_headers_select() {
        let shared = shared();
        let hit = tst(&shared, "10.0.0.2:4827", b"X-Variant: a\r\n").expect("a reply");
        assert_eq!(hit.response, ResponseCode::ZERO);
        let OpData::Detail(detail) = &hit.op_data else {
            panic!("{hit:?}");
        };
        assert!(detail.response_headers.starts_with(b"Age: "));
        assert_eq!(
            detail.entity_headers,
            b"Expires: Thu, 01 Jan 2099 00:00:00 GMT\r\n"
        );
        let miss = tst(&shared, "10.0.0.2:4827", b"X-Variant: b\r\n").expect("a reply");
        assert_eq!(miss, HtcpMessage::tst_miss(HtcpLayout::Rfc, 5));
        assert_eq!(tst(&shared, "10.0.0.3:4827", b"X-Variant: a\r\n"), None);
        let totals = &shared.stats.htcp;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
        assert_eq!(
            (
                load(&totals.answered_hit),
                load(&totals.answered_miss),
                load(&totals.denied)
            ),
            (1, 1, 1)
        );
    }

    #[tokio::test]
    async fn clr_is_obeyed_only_from_htcp_clr_access_even_for_a_peer() {
        let shared = shared();
        let runtime = shared.runtime.load_full();
        let specifier = Specifier::get(URL, Vec::new());
        let query = HtcpMessage::clr_query(
            HtcpLayout::Rfc,
            8,
            ClrReason::Unspecified,
            specifier.clone(),
            true,
        );
        let htcp = HtcpSocket::prepare("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let clr = (ClrReason::Unspecified, &specifier);
        let from_peer = clear(
            &htcp,
            &shared,
            &runtime,
            "10.0.0.2:4827".parse().unwrap(),
            &query,
            clr,
        );
        assert_eq!(from_peer.await, None);
        assert!(shared
            .store
            .load()
            .lookup(URL, &request_headers(b"X-Variant: a\r\n"))
            .is_some());
        let allowed = "10.0.0.9:4827".parse().unwrap();
        let purged = clear(&htcp, &shared, &runtime, allowed, &query, clr).await;
        assert_eq!(
            purged,
            Some(HtcpMessage::clr_reply(
                HtcpLayout::Rfc,
                8,
                ResponseCode::ZERO
            ))
        );
        let again = clear(&htcp, &shared, &runtime, allowed, &query, clr).await;
        assert_eq!(
            again,
            Some(HtcpMessage::clr_reply(
                HtcpLayout::Rfc,
                8,
                ResponseCode::CLR_NOT_FOUND
            ))
        );
    }

    #[test]
    fn header_lines_read_back_as_fields() {
        let headers = request_headers(
            b"Accept-Language: fr\r\nHost: example.com\r\nnot a field\r\nX-Two: a\r\nX-Two: b\r\n",
        );
        assert_eq!(headers["accept-language"], "fr");
        assert_eq!(headers["host"], "example.com");
        assert_eq!(headers.get_all("x-two").iter().count(), 2);
        assert_eq!(headers.len(), 4);
        assert!(request_headers(b"").is_empty());
    }
}
