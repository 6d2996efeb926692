//! Canopy's caching proxy.
//!
//! - [`config`]: every setting, its default and its validation (shared with the manager).
//! - [`versions`]: config versions in SQLite, the single source of truth.
//! - [`control`]: the control socket's protocol, server and client.
//! - [`stats`]: counters, in total and per peer.

pub mod config;
pub mod control;
pub mod stats;
pub mod versions;
