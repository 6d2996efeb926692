//! Squid cache digests: a Bloom filter of the keys a cache holds, which peers fetch from
//! `/squid-internal-periodic/store_digest` and consult instead of asking by ICP or HTCP.
//!
//! - [`key`]: the store key Squid digests, MD5 of a method id and the URL.
//! - [`cache_digest`]: the bit array, its four hash functions, and the body Squid serves
//!   (a 128-octet header then the mask).
//! - [`builder`]: this cache's own digest, built from its stores.
//! - [`server`]: rebuilding it on a period, and answering the requests for it.
//! - [`peer_digest`]: a peer's digest as held here, and when to fetch it again.
//! - [`peers`]: fetching peers' digests, and which peer's digest predicts a hit.

pub mod builder;
pub mod cache_digest;
pub mod key;
pub mod peer_digest;
pub mod peers;
pub mod server;

/// The path Squid serves its digest at, and asks its peers for.
pub const STORE_DIGEST_PATH: &str = "/squid-internal-periodic/store_digest";
/// The content type of a digest; Squid sends it in `Accept` and expects it back.
pub const CONTENT_TYPE: &str = "application/cache-digest";
