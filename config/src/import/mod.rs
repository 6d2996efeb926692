//! Other proxies' files read into settings. A file with any line Canopy cannot honour
//! imports nothing, and every such line is reported.

pub mod parent_config;
pub mod peer_import;
