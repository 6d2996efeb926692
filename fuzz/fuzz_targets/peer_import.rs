//! Fuzzes the Squid `cache_peer` / Traffic Server `icp.config` importer: no input may panic,
//! and every peer it accepts has usable ports and weight.
#![no_main]

use canopy_config::import::peer_import;
use libfuzzer_sys::fuzz_target;

const GROUP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(239, 255, 31, 30);

fuzz_target!(|text: &str| {
    if let Ok(peers) = peer_import::parse(text, GROUP) {
        for peer in peers {
            assert!(peer.http_port != 0 && peer.icp_port != 0, "{peer:?}");
            assert!(peer.weight >= 1, "{peer:?}");
            assert!(!peer.host.is_empty(), "{peer:?}");
        }
    }
});
