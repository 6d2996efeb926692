//! ICP (RFC 2186): asking neighbour caches whether they hold an object, and answering them.
//!
//! - [`codec`]: the datagrams on the wire.
//! - [`socket`]: the one socket bound to `icp_port` on `bind_address` (plus the multicast
//!   group's, when on), and the rounds of our queries waiting on it.
//! - [`serve`]: the loop that hands queries to the responder and replies to the querier.
//! - [`responder`]: what a query gets: HIT, MISS, MISS_NOFETCH, ERR or DENIED (HIT_OBJ
//!   when it asked and `icp_hit_obj` is on).
//! - [`hit_obj`]: the object a HIT_OBJ reply carries, written and read back.
//! - [`querier`]: one round of queries for a miss, and the replies it waits for.

pub mod codec;
pub mod hit_obj;
pub mod querier;
pub mod responder;
pub mod serve;
pub mod socket;
