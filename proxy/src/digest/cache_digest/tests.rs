use super::*;
use proptest::prelude::*;

/// The mask of a digest Debian's Squid 5.7 served (captured) after fetching the three
/// [`HELD`] URLs, beside its built-in icons: capacity 51, count 54, mask 32 octets.
const SQUID_MASK: [u8; 32] = [
    0x21, 0x8b, 0xe7, 0xf5, 0x04, 0x93, 0xb9, 0xbf, 0x2e, 0xd7, 0xb1, 0x71, 0xa1, 0x77, 0xbc, 0x5f,
    0x24, 0x6e, 0x12, 0xb3, 0x24, 0x98, 0xdf, 0x1e, 0x90, 0xb1, 0x92, 0x57, 0xb4, 0xdd, 0xcf, 0x6d,
];

const HELD: [&str; 3] = [
    "http://127.0.0.1:18080/a",
    "http://127.0.0.1:18080/b/c",
    "http://127.0.0.1:18080/d?x=1",
];

fn squid_body() -> Vec<u8> {
    let mut body = vec![
        0x00, 0x05, 0x00, 0x03, // version 5, required 3
        0x00, 0x00, 0x00, 0x33, // capacity 51
        0x00, 0x00, 0x00, 0x36, // count 54
        0x00, 0x00, 0x00, 0x00, // deleted 0
        0x00, 0x00, 0x00, 0x20, // mask size 32
        0x05, 0x04, // bits per entry, hash functions
    ];
    body.resize(HEADER_LEN, 0);
    body.extend_from_slice(&SQUID_MASK);
    body
}

#[test]
fn squids_digest_decodes_and_holds_what_squid_fetched() {
    let digest = CacheDigest::decode(&squid_body()).expect("squid's digest decodes");
    assert_eq!(
        (
            digest.capacity(),
            digest.count(),
            digest.del_count(),
            digest.mask_size(),
            digest.bits_per_entry()
        ),
        (51, 54, 0, 32, 5)
    );
    for url in HELD {
        assert!(digest.contains(&StoreKey::get(url)), "{url} not in digest");
    }
    assert!(!digest.contains(&StoreKey::get("http://127.0.0.1:18080/zzz")));
    assert_eq!(digest.bits_on(), 138);
    assert_eq!(digest.check_usable(), Ok(()));
    assert_eq!(digest.encode(), squid_body());
}

#[test]
fn added_keys_set_the_bits_squid_would_set() {
    // Capacity 51 at 5 bits: 256 bits. Each key's words modulo 256 are its last octets.
    let mut digest = CacheDigest::new(51, BITS_PER_ENTRY).expect("valid size");
    let key = StoreKey::get(HELD[0]); // a2d7c535 d32af068 58202e2f 67195e98
    digest.add(&key);
    let on: Vec<usize> = (0..256)
        .filter(|b| digest.mask[b >> 3] & (1 << (b & 7)) != 0)
        .collect();
    assert_eq!(on, vec![0x2f, 0x35, 0x68, 0x98]);
    assert!(digest.contains(&key));
    assert_eq!(digest.count(), 1);
}

#[test]
fn mask_size_is_squids_rounding_up_and_refuses_what_squid_asserts_on() {
    assert_eq!(mask_size(51, 5), Ok(32));
    assert_eq!(mask_size(1, 5), Ok(1));
    assert_eq!(mask_size(8, 1), Ok(1));
    assert_eq!(mask_size(9, 1), Ok(2));
    assert_eq!(
        mask_size(0, 5),
        Err(DigestError::CapacityOutOfRange {
            capacity: 0,
            bits_per_entry: 5
        })
    );
    assert!(mask_size(i32::MAX as u32 / 4, 5).is_err());
}

#[test]
fn capacity_follows_squids_store_digest_calc_cap() {
    assert_eq!(capacity_for(54, 0, 100 << 20, AVG_OBJECT_SIZE, 5), 54);
    // An empty store: what the store could hold at the average size.
    assert_eq!(capacity_for(0, 0, 16 << 20, AVG_OBJECT_SIZE, 5), 1260);
    // Never below one more than the store's bytes at the average size.
    assert_eq!(
        capacity_for(2, 10 * AVG_OBJECT_SIZE, 0, AVG_OBJECT_SIZE, 5),
        11
    );
    assert_eq!(
        capacity_for(u64::MAX, 0, 0, AVG_OBJECT_SIZE, 5),
        (i32::MAX as u32 - 8) / 5
    );
    assert!(!worth_resizing(100, 110));
    assert!(worth_resizing(100, 111));
    assert!(worth_resizing(100, 89));
}

#[test]
fn headers_squid_rejects_are_rejected_with_what_was_wrong() {
    let with = |at: usize, bytes: &[u8]| {
        let mut body = squid_body();
        body[at..at + bytes.len()].copy_from_slice(bytes);
        CacheDigest::decode(&body)
    };
    assert_eq!(
        CacheDigest::decode(&[0; 127]),
        Err(DigestError::TooShort { len: 127 })
    );
    assert_eq!(
        with(2, &[0, 6]),
        Err(DigestError::RequiresNewerVersion { required: 6 })
    );
    assert_eq!(
        with(0, &[0, 2, 0, 2]),
        Err(DigestError::VersionTooOld { current: 2 })
    );
    assert_eq!(
        with(0, &[0, 3, 0, 4]),
        Err(DigestError::VersionsInverted {
            current: 3,
            required: 4
        })
    );
    assert_eq!(
        with(4, &[0x80, 0, 0, 0]),
        Err(DigestError::NotPositive {
            field: HeaderField::Capacity,
            value: i32::MIN
        })
    );
    assert_eq!(
        with(20, &[0]),
        Err(DigestError::NotPositive {
            field: HeaderField::BitsPerEntry,
            value: 0
        })
    );
    assert_eq!(
        with(16, &[0, 0, 0, 33]),
        Err(DigestError::MaskSizeMismatch {
            mask_size: 33,
            capacity: 51,
            bits_per_entry: 5,
            expected: 32
        })
    );
    assert_eq!(
        with(21, &[3]),
        Err(DigestError::UnsupportedHashFunctions { count: 3 })
    );
    let body = squid_body();
    assert_eq!(
        CacheDigest::decode(&body[..150]),
        Err(DigestError::MaskLengthMismatch {
            mask_size: 32,
            len: 22
        })
    );
}

#[test]
fn a_digest_more_than_65_percent_on_is_not_usable() {
    let mut digest = CacheDigest::new(51, BITS_PER_ENTRY).expect("valid size");
    digest.mask.fill(0xff);
    assert_eq!(
        digest.check_usable(),
        Err(DigestError::TooManyBitsOn { percent_on: 100.0 })
    );
    // 166 of 256 bits is 64.8 %: usable; 167 is 65.2 %: not.
    digest.mask.fill(0);
    for bit in 0..166 {
        digest.mask[bit >> 3] |= 1 << (bit & 7);
    }
    assert_eq!(digest.check_usable(), Ok(()));
    digest.mask[166 >> 3] |= 1 << (166 & 7);
    assert!(digest.check_usable().is_err());
}

proptest! {
    #[test]
    fn every_added_key_is_contained_and_survives_the_wire(
        capacity in 1u32..2000,
        urls in proptest::collection::vec("[a-z/.:]{1,40}", 0..50),
    ) {
        let mut digest = CacheDigest::new(capacity, BITS_PER_ENTRY).expect("valid size");
        for url in &urls {
            digest.add(&StoreKey::get(url));
        }
        let decoded = CacheDigest::decode(&digest.encode()).expect("own digest decodes");
        for url in &urls {
            prop_assert!(decoded.contains(&StoreKey::get(url)));
        }
        prop_assert_eq!(decoded, digest);
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(digest) = CacheDigest::decode(&body) {
            prop_assert_eq!(digest.encode().len(), HEADER_LEN + digest.mask_size() as usize);
            let _ = digest.contains(&StoreKey::get("http://example.com/"));
        }
    }

    #[test]
    fn a_sound_header_over_arbitrary_masks_never_panics(
        capacity in 1u32..200,
        bits_per_entry in 1u8..16,
        mask in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut body = CacheDigest::new(capacity, bits_per_entry).expect("valid size").encode();
        body.truncate(HEADER_LEN);
        body.extend_from_slice(&mask);
        if let Ok(digest) = CacheDigest::decode(&body) {
            prop_assert_eq!(digest.encode(), body);
        }
    }
}
