//! The request path: listener, access control, forwarding, CONNECT tunnels, error pages.

pub mod errors;
pub mod forward;
pub mod headers;
pub mod listener;
pub mod max_forwards;
pub mod timeouts;
pub mod tunnel;
pub mod workers;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the proxy sends: from the cache, from upstream, or a page of its own.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full_body(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty_body() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}
