//! PURGE, as Squid answers it: every stored variant of the URL removed here, from memory
//! and disk, never forwarded; allowed from `purge_allowed_clients` only.

use std::net::IpAddr;

use http::{HeaderMap, Method, Response, StatusCode, Uri};

use super::Served;
use crate::cache::key::cache_key;
use crate::htcp::codec::ClrReason;
use crate::htcp::querier;
use crate::http::body::empty_body;
use crate::http::errors::ProxyError;
use crate::runtime::{Runtime, Shared};

/// Whether a request is a PURGE; the method is an extension one, so compared by name.
pub(super) fn is_purge(method: &Method) -> bool {
    method.as_str() == "PURGE"
}

/// Removes what is stored for `url`: 200 if there was something, 404 if not (Squid logs
/// both as `TCP_MISS`), 403 for a client outside `purge_allowed_clients`.
pub(super) async fn purge(
    shared: &Shared,
    runtime: &Runtime,
    client: IpAddr,
    url: &Uri,
    headers: &HeaderMap,
) -> Served {
    shared.stats.purges.add(1);
    if !runtime.config.purge_allowed_clients.contains(client) {
        tracing::info!(%client, %url, "PURGE from a client not in purge_allowed_clients: 403");
        let error = ProxyError::forbidden(format!(
            "Access denied: {client} may not purge objects from this cache (purge_allowed_clients)."
        ));
        return Served::refused(error, runtime);
    }
    let key = cache_key(url);
    let removed = shared.remove_everywhere(&key).await;
    // As Squid, peers that take CLR are told of each object purged.
    if removed {
        querier::send_clr(runtime, &key, ClrReason::Unspecified, headers).await;
    }
    let status = if removed {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    let mut response = Response::new(empty_body());
    *response.status_mut() = status;
    Served::answered(response)
}
