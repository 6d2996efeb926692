//! Serving this cache's digest: rebuilt every `digest_rebuild_period_s` while
//! `digest_generation` is on, and answered at [`STORE_DIGEST_PATH`] to whoever may use the
//! proxy (`allowed_clients`, which the listener checks first), in origin form as Squid asks
//! its peers, or in absolute form naming this proxy.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode, Uri};

use super::builder::{self, BuildSettings};
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

/// The reply to a request for the digest.
pub fn answer(shared: &Shared, config: &Config, method: &Method) -> Response<ProxyBody> {
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
    let body = if method == Method::HEAD {
        empty_body()
    } else {
        full_body(built.body.clone())
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(built.body.len()));
    for (name, at) in [
        (header::DATE, SystemTime::now()),
        (header::LAST_MODIFIED, built.built_at),
        (header::EXPIRES, built.expires),
    ] {
        if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(at)) {
            headers.insert(name, value);
        }
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
}
