//! A Squid cache digest (`src/CacheDigest.cc`): a Bloom filter over store keys, and the body
//! Squid serves for it (`src/store_digest.cc`) and checks on receipt (`src/peer_digest.cc`).
//!
//! The body is a 128-octet header, multi-octet fields big-endian (Squid's
//! `StoreDigestCBlock`): current version (2), required version (2), capacity (4), count (4),
//! deleted count (4), mask size (4), bits per entry (1), hash function count (1), then
//! reserved zeros; then the mask of `mask_size` octets. Bit `b` lives at
//! `mask[b >> 3] & (1 << (b & 7))`.

use thiserror::Error;

use super::key::StoreKey;

/// Octets of the header before the mask.
pub const HEADER_LEN: usize = 128;
/// The digest format Squid writes.
pub const VERSION: u16 = 5;
/// The oldest format a reader of [`VERSION`] understands, and the one Squid requires.
pub const REQUIRED_VERSION: u16 = 3;
/// Squid's `digest_bits_per_entry` default.
pub const BITS_PER_ENTRY: u8 = 5;
/// Hash functions per key: one per 32-bit word of the MD5 key.
pub const HASH_FUNCTIONS: u8 = 4;
/// Squid does not use a peer's digest with more than this percentage of its bits on.
pub const MAX_USABLE_PERCENT_ON: f64 = 65.0;
/// Squid's `store_avg_object_size` default, which sizes a digest when the store is empty.
pub const AVG_OBJECT_SIZE: u64 = 13 * 1024;

/// A cache digest: what a cache says it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDigest {
    /// Entries the mask was sized for; not a limit.
    capacity: u32,
    /// Keys added.
    count: u32,
    /// Deletions noted (Squid counts them but cannot remove bits).
    del_count: u32,
    bits_per_entry: u8,
    mask: Vec<u8>,
}

impl CacheDigest {
    /// An empty digest for `capacity` entries at `bits_per_entry`.
    pub fn new(capacity: u32, bits_per_entry: u8) -> Result<Self, DigestError> {
        let mask_size = mask_size(capacity, bits_per_entry)?;
        Ok(Self {
            capacity,
            count: 0,
            del_count: 0,
            bits_per_entry,
            mask: vec![0; mask_size as usize],
        })
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn del_count(&self) -> u32 {
        self.del_count
    }

    pub fn bits_per_entry(&self) -> u8 {
        self.bits_per_entry
    }

    /// The mask's size in octets.
    pub fn mask_size(&self) -> u32 {
        self.mask.len() as u32
    }

    /// Sets `key`'s four bits (Squid's `CacheDigest::add`).
    pub fn add(&mut self, key: &StoreKey) {
        for bit in self.bits(key) {
            self.mask[bit >> 3] |= 1 << (bit & 7);
        }
        self.count = self.count.saturating_add(1);
    }

    /// Counts a deletion; the bits stay, as in Squid's `CacheDigest::remove`.
    pub fn note_deletion(&mut self) {
        self.del_count = self.del_count.saturating_add(1);
    }

    /// Whether all four of `key`'s bits are on: the cache probably holds it.
    pub fn contains(&self, key: &StoreKey) -> bool {
        self.bits(key)
            .iter()
            .all(|&bit| self.mask[bit >> 3] & (1 << (bit & 7)) != 0)
    }

    /// Squid's `cacheDigestHashKey`: each big-endian word of the key modulo the mask's bits.
    fn bits(&self, key: &StoreKey) -> [usize; 4] {
        // The mask is never empty: `mask_size` refuses a zero capacity or bits per entry.
        let bit_count = self.mask.len() as u32 * 8;
        key.words().map(|word| (word % bit_count) as usize)
    }

    /// Bits on, out of the mask's.
    pub fn bits_on(&self) -> u64 {
        self.mask
            .iter()
            .map(|octet| u64::from(octet.count_ones()))
            .sum()
    }

    /// Percentage of the mask's bits that are on (Squid's `usedMaskPercent`).
    pub fn percent_on(&self) -> f64 {
        100.0 * self.bits_on() as f64 / (self.mask.len() as f64 * 8.0)
    }

    /// Squid's `peerDigestUseful`: a digest too full predicts hits for nearly everything.
    pub fn check_usable(&self) -> Result<(), DigestError> {
        let percent_on = self.percent_on();
        if percent_on > MAX_USABLE_PERCENT_ON {
            return Err(DigestError::TooManyBitsOn { percent_on });
        }
        Ok(())
    }

    /// The reply body Squid serves for its digest (`storeDigestCBlockSwapOut`, then the mask).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(HEADER_LEN + self.mask.len());
        body.extend_from_slice(&VERSION.to_be_bytes());
        body.extend_from_slice(&REQUIRED_VERSION.to_be_bytes());
        body.extend_from_slice(&self.capacity.to_be_bytes());
        body.extend_from_slice(&self.count.to_be_bytes());
        body.extend_from_slice(&self.del_count.to_be_bytes());
        body.extend_from_slice(&self.mask_size().to_be_bytes());
        body.push(self.bits_per_entry);
        body.push(HASH_FUNCTIONS);
        body.resize(HEADER_LEN, 0);
        body.extend_from_slice(&self.mask);
        body
    }

    /// A peer's digest from the reply body, checked as Squid's `peerDigestSetCBlock` checks
    /// it (versions both ways, positive sizes, the mask size its capacity gives, four hash
    /// functions) and then for its length. How full it is is [`Self::check_usable`]'s call.
    pub fn decode(body: &[u8]) -> Result<Self, DigestError> {
        let header: &[u8; HEADER_LEN] = body
            .first_chunk()
            .ok_or(DigestError::TooShort { len: body.len() })?;
        let u16_at = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
        let i32_at = |at: usize| {
            i32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let (current, required) = (u16_at(0), u16_at(2));
        let (capacity, count, del_count, mask_size) =
            (i32_at(4), i32_at(8), i32_at(12), i32_at(16));
        let (bits_per_entry, hash_functions) = (header[20], header[21]);

        if required > VERSION {
            return Err(DigestError::RequiresNewerVersion { required });
        }
        if current < REQUIRED_VERSION {
            return Err(DigestError::VersionTooOld { current });
        }
        if required > current {
            return Err(DigestError::VersionsInverted { current, required });
        }
        for (field, value) in [
            (HeaderField::MaskSize, mask_size),
            (HeaderField::Capacity, capacity),
            (HeaderField::BitsPerEntry, i32::from(bits_per_entry)),
            (HeaderField::HashFunctions, i32::from(hash_functions)),
        ] {
            if value <= 0 {
                return Err(DigestError::NotPositive { field, value });
            }
        }
        let (capacity, mask_size) = (capacity as u32, mask_size as u32);
        let expected = self::mask_size(capacity, bits_per_entry)?;
        if mask_size != expected {
            return Err(DigestError::MaskSizeMismatch {
                mask_size,
                capacity,
                bits_per_entry,
                expected,
            });
        }
        if hash_functions != HASH_FUNCTIONS {
            return Err(DigestError::UnsupportedHashFunctions {
                count: hash_functions,
            });
        }
        let mask = &body[HEADER_LEN..];
        if mask.len() != mask_size as usize {
            return Err(DigestError::MaskLengthMismatch {
                mask_size,
                len: mask.len(),
            });
        }
        Ok(Self {
            capacity,
            // Squid reads these as signed ints and only reports them.
            count: count as u32,
            del_count: del_count as u32,
            bits_per_entry,
            mask: mask.to_vec(),
        })
    }
}

/// Squid's `CacheDigest::CalcMaskSize`: octets for `capacity` entries at `bits_per_entry`,
/// refused where Squid asserts (the bit count must stay below `INT_MAX`).
pub fn mask_size(capacity: u32, bits_per_entry: u8) -> Result<u32, DigestError> {
    let bit_count = u64::from(capacity) * u64::from(bits_per_entry) + 7;
    if capacity == 0 || bits_per_entry == 0 || bit_count >= i32::MAX as u64 {
        return Err(DigestError::CapacityOutOfRange {
            capacity,
            bits_per_entry,
        });
    }
    Ok((bit_count / 8) as u32)
}

/// Squid's `storeDigestCalcCap`: the capacity of a digest of a store holding `entries`
/// entries in `bytes` octets out of `max_bytes`. The entry count when there is one, else
/// what the store could hold at the average object size; never below what it holds now at
/// that size, never so large that [`mask_size`] would refuse it.
pub fn capacity_for(
    entries: u64,
    bytes: u64,
    max_bytes: u64,
    avg_object_size: u64,
    bits_per_entry: u8,
) -> u32 {
    let avg_object_size = avg_object_size.max(1);
    let high = max_bytes / avg_object_size;
    let low = 1 + bytes / avg_object_size;
    let wanted = if entries > 0 { entries } else { high }.max(low);
    let absolute_max = (i32::MAX as u64 - 8) / u64::from(bits_per_entry.max(1));
    wanted.min(absolute_max) as u32
}

/// Squid's `storeDigestResize`: a rebuild keeps the old size unless the wanted capacity
/// differs by more than a tenth.
pub fn worth_resizing(current: u32, wanted: u32) -> bool {
    current.abs_diff(wanted) > current / 10
}

/// The header fields that must be positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderField {
    Capacity,
    MaskSize,
    BitsPerEntry,
    HashFunctions,
}

/// Why a digest cannot be built, read or used.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DigestError {
    #[error(
        "digest capacity {capacity} at {bits_per_entry} bits per entry gives no usable mask size"
    )]
    CapacityOutOfRange { capacity: u32, bits_per_entry: u8 },
    #[error("digest body of {len} octets is shorter than the {HEADER_LEN}-octet header")]
    TooShort { len: usize },
    #[error("digest requires version {required}; Canopy reads up to {VERSION}")]
    RequiresNewerVersion { required: u16 },
    #[error("digest is version {current}; Canopy requires at least {REQUIRED_VERSION}")]
    VersionTooOld { current: u16 },
    #[error(
        "digest header is corrupt: required version {required} is above its version {current}"
    )]
    VersionsInverted { current: u16, required: u16 },
    #[error("digest header is corrupt: {field:?} is {value}, not positive")]
    NotPositive { field: HeaderField, value: i32 },
    #[error(
        "digest header is corrupt: mask size {mask_size} but capacity {capacity} at {bits_per_entry} bits per entry gives {expected}"
    )]
    MaskSizeMismatch {
        mask_size: u32,
        capacity: u32,
        bits_per_entry: u8,
        expected: u32,
    },
    #[error("digest uses {count} hash functions; Canopy supports only {HASH_FUNCTIONS}")]
    UnsupportedHashFunctions { count: u8 },
    #[error("digest mask is {len} octets but its header says {mask_size}")]
    MaskLengthMismatch { mask_size: u32, len: usize },
    #[error("digest has {percent_on:.1}% of its bits on, more than the {MAX_USABLE_PERCENT_ON}% Squid accepts")]
    TooManyBitsOn { percent_on: f64 },
}

#[cfg(test)]
mod tests;
