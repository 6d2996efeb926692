//! The shared cache: the key, the memory store (the hot tier), the disk store and its
//! async face (the second tier), the freshness policy, collapsed forwarding, the listing
//! of what both tiers hold, and partial content held for range requests.

pub mod collapse;
pub mod disk;
pub mod disk_tier;
pub mod key;
pub mod listing;
pub mod partial;
pub mod policy;
pub mod store;
