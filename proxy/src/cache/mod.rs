//! The shared cache: the store, the freshness policy, and collapsed forwarding.

pub mod collapse;
pub mod disk;
pub mod policy;
pub mod store;
