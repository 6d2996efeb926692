//! The shared cache: the key, the store, the freshness policy, and collapsed forwarding.

pub mod collapse;
pub mod key;
pub mod policy;
pub mod store;
