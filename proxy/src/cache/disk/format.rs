//! The on-disk format, version [`FORMAT_VERSION`]: where files go, the object file's layout
//! and the index's records. Any change to what is written here is a new version: an older
//! store is then discarded at open, never misread.
//!
//! An object file is a 32-byte header (magic, format, object id, body length) and then the
//! body in frames: each 64 KiB of body (the last one shorter) followed by its 8-byte
//! checksum, seeded by the object id and the frame's number, so that a frame of another
//! object or another place fails it too. The index record keeps the checksum of the whole
//! body besides.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::error::Corruption;
use super::ObjectHead;
use crate::cache::policy::{self, Heuristics, StoredTimes};

/// Written into the index and every object file.
pub const FORMAT_VERSION: u64 = 1;

const MAGIC: [u8; 8] = *b"CANOPYDC";
pub(super) const FILE_HEADER: u64 = 32;
pub(super) const CHUNK: u64 = 64 * 1024;
const SUM: u64 = 8;

pub(super) fn index_path(dir: &Path) -> PathBuf {
    dir.join("index.redb")
}

pub(super) fn objects_dir(dir: &Path) -> PathBuf {
    dir.join("objects")
}

pub(super) fn temp_dir(dir: &Path) -> PathBuf {
    dir.join("tmp")
}

/// Objects spread over 256 directories, so none holds too many names.
pub(super) fn object_path(dir: &Path, id: u64) -> PathBuf {
    objects_dir(dir)
        .join(format!("{:02x}", id & 0xff))
        .join(format!("{id:016x}"))
}

pub(super) fn temp_path(dir: &Path, id: u64) -> PathBuf {
    temp_dir(dir).join(format!("{id:016x}"))
}

/// The object id a temporary file's name stands for.
pub(super) fn temp_id(name: &str) -> Option<u64> {
    (name.len() == 16).then(|| u64::from_str_radix(name, 16).ok())?
}

pub(super) fn frames(body_len: u64) -> u64 {
    body_len.div_ceil(CHUNK)
}

pub(super) fn file_len(body_len: u64) -> u64 {
    FILE_HEADER + body_len + SUM * frames(body_len)
}

/// Where frame `index` starts, and the body bytes it holds.
pub(super) fn frame_at(body_len: u64, index: u64) -> (u64, u64) {
    let start = index * CHUNK;
    (
        FILE_HEADER + index * (CHUNK + SUM),
        (body_len - start).min(CHUNK),
    )
}

pub(super) fn frame_sum(id: u64, index: u64, data: &[u8]) -> u64 {
    xxh3_64_with_seed(data, id.rotate_left(32) ^ index)
}

pub(super) fn file_header(id: u64, body_len: u64) -> [u8; FILE_HEADER as usize] {
    let mut header = [0; FILE_HEADER as usize];
    header[..8].copy_from_slice(&MAGIC);
    header[8..16].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&id.to_le_bytes());
    header[24..32].copy_from_slice(&body_len.to_le_bytes());
    header
}

/// Checks a file's header against what the index says the file holds.
pub(super) fn check_file_header(
    header: &[u8; FILE_HEADER as usize],
    id: u64,
    body_len: u64,
) -> Result<(), Corruption> {
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let magic: [u8; 8] = header[..8].try_into().expect("8 bytes");
    if magic != MAGIC {
        return Err(Corruption::Magic { found: magic });
    }
    if word(8) != FORMAT_VERSION {
        return Err(Corruption::FileFormat {
            found: word(8),
            expected: FORMAT_VERSION,
        });
    }
    if (word(16), word(24)) != (id, body_len) {
        return Err(Corruption::Header {
            found_id: word(16),
            found_len: word(24),
            id,
            len: body_len,
        });
    }
    Ok(())
}

/// An index key: the URL, a 0 byte (no URI holds one), and the variant's hash (0 for a
/// response without Vary), so that one URL's variants are neighbours and a prefix of URLs a
/// range.
pub(super) fn object_key(url: &str, vary: Option<&[(HeaderName, Option<String>)]>) -> Vec<u8> {
    let variant = vary.map_or(0, |vary| {
        let mut encoded = Writer::default();
        encoded.vary(Some(vary));
        xxh3_64(&encoded.0) | 1
    });
    let mut key = Vec::with_capacity(url.len() + 9);
    key.extend_from_slice(url.as_bytes());
    key.push(0);
    key.extend_from_slice(&variant.to_be_bytes());
    key
}

/// The range of keys of `url`'s variants.
pub(super) fn url_range(url: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut low = url.to_vec();
    low.push(0);
    let mut high = url.to_vec();
    high.push(1);
    (low, high)
}

/// For an object without Vary, what an ICP query is answered from: its id, its URL's hash
/// and until when it is fresh (seconds since the epoch). Only an explicit lifetime counts
/// (max-age, Expires): a heuristic one depends on settings the store does not know.
pub(super) fn fresh_until(key: &[u8], record: &Record) -> Option<(u64, u64, u32)> {
    if record.head.vary.is_some() {
        return None;
    }
    let explicit_only = Heuristics {
        lm_factor: 0.0,
        min: Duration::ZERO,
        max: Duration::ZERO,
    };
    let head = &record.head;
    let now = SystemTime::now();
    // Cache-Control alone: the store does not know the targeted fields of the runtime, and a
    // shorter lifetime there only makes ICP's HIT a revalidation.
    let left = policy::remaining_freshness(
        head.status,
        &head.headers,
        &head.times,
        now,
        &explicit_only,
        &[],
    );
    let until = u64::from(seconds_now()).saturating_add(left.as_secs());
    Some((
        record.id,
        url_hash(key_url(key)),
        u32::try_from(until).unwrap_or(u32::MAX),
    ))
}

pub(super) fn url_hash(url: &[u8]) -> u64 {
    xxh3_64(url)
}

/// The URL part of a key.
pub(super) fn key_url(key: &[u8]) -> &[u8] {
    &key[..key.len().saturating_sub(9)]
}

/// What the index keeps of one object.
#[derive(Debug, Clone)]
pub(super) struct Record {
    pub id: u64,
    pub body_len: u64,
    /// xxh3-64 of the whole body.
    pub checksum: u64,
    pub head: ObjectHead,
}

/// What the index keeps per object for eviction, loaded whole at open: its weight, when it
/// was last used (seconds since the epoch), and its key.
pub(super) struct Slot<'a> {
    pub weight: u64,
    pub last_access: u32,
    pub key: &'a [u8],
}

impl Slot<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.key.len());
        out.extend_from_slice(&self.weight.to_le_bytes());
        out.extend_from_slice(&self.last_access.to_le_bytes());
        out.extend_from_slice(self.key);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Slot<'_>, Corruption> {
        let mut r = Reader { buf: bytes, at: 0 };
        Ok(Slot {
            weight: r.u64()?,
            last_access: r.u32()?,
            key: &bytes[12..],
        })
    }
}

fn nanos(t: SystemTime) -> u64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

pub(super) fn seconds_now() -> u32 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u32::try_from(since.as_secs()).unwrap_or(u32::MAX)
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.id);
        w.u64(self.body_len);
        w.u64(self.checksum);
        w.u16(self.head.status.as_u16());
        w.u64(nanos(self.head.times.request_time));
        w.u64(nanos(self.head.times.response_time));
        w.vary(self.head.vary.as_deref());
        w.u32(self.head.headers.len() as u32);
        for (name, value) in &self.head.headers {
            w.bytes(name.as_str().as_bytes());
            w.bytes(value.as_bytes());
        }
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, Corruption> {
        let mut r = Reader { buf: bytes, at: 0 };
        let id = r.u64()?;
        let body_len = r.u64()?;
        let checksum = r.u64()?;
        let status = r.u16()?;
        let status = StatusCode::from_u16(status).map_err(|_| r.fault())?;
        let time = |n: u64| UNIX_EPOCH + Duration::from_nanos(n);
        let times = StoredTimes {
            request_time: time(r.u64()?),
            response_time: time(r.u64()?),
        };
        let vary = match r.u8()? {
            0 => None,
            _ => {
                let count = r.u16()?;
                let mut vary = Vec::with_capacity(count.into());
                for _ in 0..count {
                    let name = HeaderName::from_bytes(r.bytes()?).map_err(|_| r.fault())?;
                    let value = match r.u8()? {
                        0 => None,
                        _ => Some(String::from_utf8(r.bytes()?.to_vec()).map_err(|_| r.fault())?),
                    };
                    vary.push((name, value));
                }
                Some(vary)
            }
        };
        let count = r.u32()?;
        let mut headers = HeaderMap::with_capacity(count.min(1000) as usize);
        for _ in 0..count {
            let name = HeaderName::from_bytes(r.bytes()?).map_err(|_| r.fault())?;
            let value = HeaderValue::from_bytes(r.bytes()?).map_err(|_| r.fault())?;
            headers.append(name, value);
        }
        Ok(Record {
            id,
            body_len,
            checksum,
            head: ObjectHead {
                status,
                headers,
                times,
                vary,
            },
        })
    }
}

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn vary(&mut self, vary: Option<&[(HeaderName, Option<String>)]>) {
        let Some(vary) = vary else {
            return self.u8(0);
        };
        self.u8(1);
        self.u16(vary.len() as u16);
        for (name, value) in vary {
            self.bytes(name.as_str().as_bytes());
            match value {
                None => self.u8(0),
                Some(value) => {
                    self.u8(1);
                    self.bytes(value.as_bytes());
                }
            }
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn fault(&self) -> Corruption {
        Corruption::Record { at: self.at }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corruption> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.buf.len());
        let end = end.ok_or(self.fault())?;
        let taken = &self.buf[self.at..end];
        self.at = end;
        Ok(taken)
    }
    fn u8(&mut self) -> Result<u8, Corruption> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Corruption> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, Corruption> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, Corruption> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<&'a [u8], Corruption> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}
