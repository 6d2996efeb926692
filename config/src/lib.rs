//! What Canopy's proxy, console and CLI share, and nothing of the request path:
//!
//! - [`changes`]: what a version changed, one line per change, for the console and the CLI.
//! - [`config`]: every setting, its default and its validation.
//! - [`database`]: the config database, SQLite in the data dir or a fleet's PostgreSQL.
//! - [`versions`]: config versions, the single source of truth.
//! - [`nodes`]: the proxies a database serves, and what each did with each version.
//! - [`maintenance`]: peers taken down by hand, kept across restarts.
//! - [`fleet`]: the live nodes of a fleet, as `fleet_peering` makes peers of them.
//! - [`import`]: other proxies' files read into settings: Squid `cache_peer`, Traffic Server
//!   `icp.config` and `parent.config`.
//! - [`resolve`]: whether the host names a config newly gives resolve (a warning, not a refusal).
//! - [`control`]: the control socket's protocol and its client.
//! - [`purge`]: PURGE sent to the running proxy's listener (`canopy purge`, the console).
//! - [`stats`]: what the proxy's `stats` command returns.
//! - [`files`]: the modes of the data dir, the database and the logs (the admin's alone).
//! - [`supervision`]: what `canopy run` says about the processes it supervises.

pub mod changes;
pub mod config;
pub mod control;
pub mod database;
pub mod files;
pub mod fleet;
pub mod import;
pub mod maintenance;
pub mod nodes;
pub mod purge;
pub mod resolve;
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
