//! Canopy's caching proxy. Modules follow a request's path:
//!
//! - [`http`]: the listener, access control, forwarding, CONNECT tunnels, error pages.
//! - [`cache`]: the store, the freshness policy, and collapsing of concurrent misses.
//! - [`hierarchy`]: the peer table, choosing the next hop (peers, parents, origin) and the
//!   upstream clients.
//! - [`icp`]: ICP with neighbour caches: the codec, the responder and the querier.
//! - [`server`]: the runtime state built from a config version, and `reload`.
//! - [`config`]: every setting, its default and its validation (shared with the manager).
//! - [`versions`]: config versions in SQLite, the single source of truth.
//! - [`control`]: the control socket's protocol, server and client.
//! - [`stats`]: counters, in total and per peer.
//! - [`access_log`]: the access log in Squid's native format.
//! - [`files`]: the modes of the data dir, the database and the logs (the admin's alone).
//! - [`supervision`]: what `canopy run` says about the processes it supervises.

pub mod access_log;
pub mod cache;
pub mod config;
pub mod control;
pub mod digest;
pub mod files;
pub mod hierarchy;
pub mod htcp;
pub mod http;
pub mod icp;
pub mod server;
pub mod stats;
pub mod supervision;
pub mod versions;

/// Operational logs to stderr, filtered by `RUST_LOG` (default `info`); both processes use it.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
