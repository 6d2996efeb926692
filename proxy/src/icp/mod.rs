//! ICP (RFC 2186): asking neighbour caches whether they hold an object, and answering them.
//!
//! - [`codec`]: the datagrams on the wire.
//! - [`endpoint`]: the one socket bound to `icp_port` on `bind_address` (plus the multicast
//!   group's, when on), and the loop that hands queries to the responder and replies to the
//!   querier.
//! - [`responder`]: what a query gets: HIT, MISS, MISS_NOFETCH, ERR or DENIED.
//! - [`querier`]: one round of queries for a miss, and the replies it waits for.

pub mod codec;
pub mod endpoint;
pub mod querier;
pub mod responder;
