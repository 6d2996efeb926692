//! Serving this cache's digest: rebuilt every `digest_rebuild_period_s` while
//! `digest_generation` is on, and answered at [`STORE_DIGEST_PATH`] to whoever may use the
//! proxy (`allowed_clients`, which the listener checks first), in origin form as Squid asks
//! its peers, or in absolute form naming this proxy.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode, Uri};

use super::builder::{self, Answered, BuildSettings};
use super::{CONTENT_TYPE, STORE_DIGEST_PATH};
use crate::http::body::{empty_body, full_body, ProxyBody};
use crate::http::errors::ProxyError;
use crate::runtime::Shared;
use canopy_config::config::Config;

/// Whether `uri` asks for this proxy's digest: its path, in origin form, or in absolute form
/// to this proxy's own listener or visible name.
pub fn is_digest_request(config: &Config, uri: &Uri) -> bool {
    if uri.path() != STORE_DIGEST_PATH || uri.query().is_some() {
        return false;
    }
    match (uri.scheme_str(), uri.authority()) {
        (None, None) => true,
        (Some("http"), Some(authority)) => {
            let port = authority.port_u16().unwrap_or(80);
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            config.is_own_listener(host, port)
                || (port == config.http_port && host.eq_ignore_ascii_case(&config.visible_name))
        }
        _ => false,
    }
}

/// The reply to a request for the digest: whole, or 304 Not Modified to a peer whose
/// If-Modified-Since is not older than the digest's `Last-Modified` (as Squid revalidates
/// the digest it holds).
pub fn answer(
    shared: &Shared,
    config: &Config,
    method: &Method,
    headers: &HeaderMap,
) -> Response<ProxyBody> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = ProxyError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{STORE_DIGEST_PATH} answers GET and HEAD only"),
        )
        .to_response(&config.visible_name);
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some(built) = shared.own_digest.current() else {
        let why = if config.digest_generation.0 {
            "this cache's digest has not been built yet"
        } else {
            "this cache builds no digest (digest_generation is off)"
        };
        return ProxyError::new(StatusCode::NOT_FOUND, why).to_response(&config.visible_name);
    };
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let not_modified = since.is_some_and(|since| built.not_modified_since(since));
    let mut response = if not_modified {
        let mut response = Response::new(empty_body());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let body = if method == Method::HEAD {
            empty_body()
        } else {
            full_body(built.body.clone())
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(built.body.len()));
        response
    };
    let headers = response.headers_mut();
    for (name, at) in [
        (header::DATE, SystemTime::now()),
        (header::LAST_MODIFIED, built.modified_at),
        (header::EXPIRES, built.expires),
    ] {
        if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(at)) {
            headers.insert(name, value);
        }
    }
    if method == Method::GET {
        shared.own_digest.count(if not_modified {
            Answered::NotModified
        } else {
            Answered::Whole
        });
    }
    response
}

/// Rebuilds the digest now and then every period, as the config in force says, until the
/// proxy is gone.
pub fn rebuild_periodically(shared: &Arc<Shared>) {
    let shared = Arc::downgrade(shared);
    tokio::spawn(async move {
        while let Some(period) = rebuild_once(&shared).await {
            tokio::time::sleep(period).await;
        }
    });
}

/// One rebuild (or the digest dropped, with generation off); the period to wait after it,
/// or `None` when the proxy is gone.
async fn rebuild_once(shared: &Weak<Shared>) -> Option<Duration> {
    let shared = shared.upgrade()?;
    let config = shared.runtime.load().config.clone();
    let period = Duration::from_secs(config.digest_rebuild_period_s.max(1));
    if !config.digest_generation.0 {
        shared.own_digest.set(None);
        return Some(period);
    }
    let settings = BuildSettings {
        period,
        bits_per_entry: config.digest_bits_per_entry,
        max_bytes: config.cache_mem.0
            + shared
                .disk
                .as_ref()
                .map_or(0, |disk| disk.stats().store.capacity),
        previous_capacity: shared.own_digest.current().map(|d| d.capacity),
    };
    let building = shared.clone();
    let built = tokio::task::spawn_blocking(move || {
        let store = building.store.load();
        let targets = &building.runtime.load().targets;
        let settings = (settings, targets.as_slice());
        builder::build(&store, building.disk.as_ref(), settings, SystemTime::now())
    })
    .await;
    match built {
        Ok(Ok(built)) => {
            let built = built.unchanged_since(shared.own_digest.current().as_deref());
            tracing::debug!(
                "cache digest rebuilt: {} entries, capacity {}",
                built.entries,
                built.capacity
            );
            shared.own_digest.set(Some(built));
        }
        Ok(Err(e)) => tracing::warn!("cache digest not rebuilt: {e}"),
        Err(e) => tracing::warn!("cache digest not rebuilt: {e}"),
    }
    Some(period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_asked_for_in_origin_form_or_of_this_proxy() {
        let config = Config {
            http_port: 3128,
            visible_name: "edge".to_owned(),
            ..Config::default()
        };
        let asks = |uri: &str| is_digest_request(&config, &uri.parse().unwrap());
        assert!(asks(STORE_DIGEST_PATH));
        assert!(asks(&format!("http://127.0.0.1:3128{STORE_DIGEST_PATH}")));
        assert!(asks(&format!("http://EDGE:3128{STORE_DIGEST_PATH}")));
        assert!(!asks(&format!("http://example.com{STORE_DIGEST_PATH}")));
        assert!(!asks(&format!("http://127.0.0.1:3129{STORE_DIGEST_PATH}")));
        assert!(!asks(&format!("{STORE_DIGEST_PATH}?x")));
        assert!(!asks("/squid-internal-periodic/other"));
    }

    #[test]
    fn if_modified_since_the_digest_last_changed_is_answered_304() {
        let shared = Shared::for_tests(Config::default());
        let config = shared.runtime.load().config.clone();
        let store = crate::cache::store::Store::new(1 << 20);
        let settings = BuildSettings {
            period: Duration::from_secs(60),
            bits_per_entry: 5,
            max_bytes: 1 << 20,
            previous_capacity: None,
        };
        let built_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let built = builder::build(&store, None, (settings, &[]), built_at).unwrap();
        shared.own_digest.set(Some(built));
        let ask = |since: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(since) = since {
                headers.insert(header::IF_MODIFIED_SINCE, since.parse().unwrap());
            }
            answer(&shared, &config, &Method::GET, &headers)
        };
        let whole = ask(None);
        assert_eq!(whole.status(), StatusCode::OK);
        assert_eq!(
            whole.headers()[header::LAST_MODIFIED],
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
        let current = ask(Some("Tue, 14 Nov 2023 22:13:20 GMT"));
        assert_eq!(current.status(), StatusCode::NOT_MODIFIED);
        assert!(current.headers().contains_key(header::EXPIRES));
        assert!(!current.headers().contains_key(header::CONTENT_TYPE));
        let older = ask(Some("Tue, 14 Nov 2023 22:13:19 GMT"));
        assert_eq!(older.status(), StatusCode::OK);
        assert_eq!(ask(Some("not a date")).status(), StatusCode::OK);
        let shown = shared
            .own_digest
            .snapshot(built_at, |t| format!("{t:?}"))
            .unwrap();
        assert_eq!((shown.served, shown.not_modified), (3, 1));
    }
}
