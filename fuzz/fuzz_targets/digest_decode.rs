//! Fuzzes cache digest decoding: no body may panic; a digest that decodes survives
//! encode→decode, and looking a key up in it is safe.
#![no_main]

use canopy_proxy::digest::cache_digest::CacheDigest;
use canopy_proxy::digest::key::StoreKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(digest) = CacheDigest::decode(body) {
        assert_eq!(CacheDigest::decode(&digest.encode()), Ok(digest.clone()));
        let _ = digest.contains(&StoreKey::get("http://example.com/"));
        let _ = digest.check_usable();
    }
});
