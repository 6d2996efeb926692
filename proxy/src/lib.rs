//! Canopy's caching proxy. Modules follow a request's path:
//!
//! - [`http`]: the listener, access control, forwarding, CONNECT tunnels, error pages.
//! - [`cache`]: the key, the store, the freshness policy, and collapsing of concurrent misses.
//! - [`hierarchy`]: the peer table, choosing the next hop (peers, parents, origin) and the
//!   upstream clients.
//! - [`icp`]: ICP with neighbour caches: the codec, the responder and the querier.
//! - [`htcp`], [`digest`]: HTCP datagrams and Squid's cache digests, at the wire level.
//! - [`runtime`]: the shared context every request reads: the state built from one config
//!   version, and what lives across versions (store, counters, in-flight fills).
//! - [`proxy`]: the orchestrator on top: start, `reload`, drain, the control handler.
//! - [`control`]: the control socket's server.
//! - [`maintenance`]: peers taken down by hand, kept in the database across restarts.
//! - [`fleet`]: the other nodes of a fleet made peers of this one (`fleet_peering`).
//! - [`node`]: this proxy as a node of its database, and the version it keeps to start on
//!   without it.
//! - [`stats`]: counters, in total and per peer.
//! - [`access_log`]: the access log in Squid's native format.
//!
//! The config model, its versions, the control protocol and the stats snapshots are in
//! `canopy-config`, shared with the manager and the CLI.

pub mod access_log;
pub mod cache;
pub mod control;
pub mod digest;
pub mod fleet;
pub mod hierarchy;
pub mod htcp;
pub mod http;
pub mod icp;
pub mod maintenance;
pub mod node;
pub mod proxy;
pub mod runtime;
pub mod stats;
