//! HTCP (RFC 2756): asking neighbour caches about an object with the request's headers, and
//! telling them to clear one.
//!
//! - [`codec`]: the datagrams on the wire, in both layouts Squid speaks.
//! - [`socket`]: the one HTCP socket on `htcp_port`, and our TST rounds waiting on it.
//! - [`serve`]: its receive loop: queries to the responder, replies to the querier.
//! - [`responder`]: TST answered for the variant the query's headers select; CLR obeyed.
//! - [`querier`]: our TSTs (part of a query round), their replies, and the CLRs we send.

pub mod codec;
pub mod querier;
pub mod responder;
pub mod serve;
pub mod socket;
