//! The shared cache: the key, the memory store (the hot tier), the disk store and its
//! async face (the second tier), the freshness policy, collapsed forwarding, and partial
//! content held for range requests.

pub mod collapse;
pub mod disk;
pub mod disk_tier;
pub mod key;
pub mod partial;
pub mod policy;
pub mod store;
