//! The shared cache: the key, the store, the disk tier (not yet wired in), the freshness
//! policy, and collapsed forwarding.

pub mod collapse;
pub mod disk;
pub mod key;
pub mod policy;
pub mod store;
