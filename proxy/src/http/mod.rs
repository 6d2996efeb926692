//! The request path: listener, access control, forwarding, CONNECT tunnels, error pages,
//! and the body type every response is sent with.

pub mod body;
pub mod errors;
pub mod forward;
pub mod headers;
pub mod interim;
pub mod listener;
pub mod max_forwards;
pub mod timeouts;
pub mod tunnel;
pub mod workers;
