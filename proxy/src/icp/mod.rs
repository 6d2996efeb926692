//! ICP (RFC 2186): the wire codec; the responder and querier come with ICP peering.

pub mod codec;
