//! HTCP (RFC 2756): asking neighbour caches about an object with the request's headers, and
//! telling them to clear one.
//!
//! - [`codec`]: the datagrams on the wire, in both layouts Squid speaks.

pub mod codec;
