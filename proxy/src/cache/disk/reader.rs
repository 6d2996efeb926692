//! Reading one object's body, checked: no byte is handed out before the checksum of the
//! frame holding it matches.
//!
//! A body up to [`CHECK_WHOLE_UP_TO`] is read and checked whole when opened, so a fault
//! shows before the first byte is served and the caller can go upstream instead. A larger
//! one is read a frame at a time; a fault found part way (a frame's checksum, or the whole
//! body's at the end) is an error from [`DiskReader::next_chunk`]: the response already
//! begun must then be cut off, never completed with other bytes.

use std::collections::VecDeque;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use xxhash_rust::xxh3::Xxh3;

use super::error::{Corruption, DiskError, DiskOp};
use super::format::{self, Record, FILE_HEADER};
use super::index::{Change, Inner};

/// Bodies up to this size are checked whole before the first byte is handed out.
pub const CHECK_WHOLE_UP_TO: u64 = 1024 * 1024;

pub struct DiskReader {
    inner: Arc<Inner>,
    key: Vec<u8>,
    id: u64,
    path: PathBuf,
    file: File,
    body_len: u64,
    checksum: u64,
    next_frame: u64,
    body_sum: Xxh3,
    /// Frames read and checked ahead (the whole of a small body).
    ready: VecDeque<Bytes>,
    /// Set at the end of the body, or at a fault: nothing more is read, and a fault is
    /// given again to any further call.
    ended: Option<Result<(), DiskError>>,
}

impl DiskReader {
    pub(super) fn open(
        inner: Arc<Inner>,
        key: Vec<u8>,
        record: &Record,
    ) -> Result<DiskReader, DiskError> {
        let mut path = format::object_path(&inner.dir, record.id);
        // Committed but not yet moved (or the move was lost in a crash): still in tmp/.
        let file = File::open(&path).or_else(|e| match e.kind() {
            ErrorKind::NotFound => {
                let temp = format::temp_path(&inner.dir, record.id);
                let file = File::open(&temp)?;
                path = temp;
                Ok(file)
            }
            _ => Err(e),
        });
        let mut reader = match file {
            Ok(file) => DiskReader {
                inner,
                key,
                id: record.id,
                path,
                file,
                body_len: record.body_len,
                checksum: record.checksum,
                next_frame: 0,
                body_sum: Xxh3::new(),
                ready: VecDeque::new(),
                ended: None,
            },
            // Removed since it was looked up: a miss, not a fault.
            Err(e) if e.kind() == ErrorKind::NotFound && !inner.holds(&key, record.id)? => {
                return Err(DiskError::Gone { path });
            }
            Err(e) => {
                let error = DiskError::io(DiskOp::Open, &path, e);
                let _ = inner.submit(Change::Drop { key, id: record.id });
                return Err(inner.fault(error));
            }
        };
        reader.check_header().map_err(|e| reader.fail(e))?;
        if reader.body_len <= CHECK_WHOLE_UP_TO {
            while let Some(chunk) = reader.read_frame().map_err(|e| reader.fail(e))? {
                reader.ready.push_back(chunk);
            }
        }
        reader.inner.counters.reads.fetch_add(1, Relaxed);
        Ok(reader)
    }

    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// A chunk read and checked already (a small body is read whole when opened), without
    /// touching the disk.
    pub fn take_ready(&mut self) -> Option<Bytes> {
        self.ready.pop_front()
    }

    /// The next chunk of the body (64 KiB but the last), `None` at its end.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>, DiskError> {
        if let Some(chunk) = self.ready.pop_front() {
            return Ok(Some(chunk));
        }
        match &self.ended {
            Some(Ok(())) => return Ok(None),
            Some(Err(e)) => return Err(e.clone()),
            None => {}
        }
        self.read_frame().map_err(|e| self.fail(e))
    }

    /// The whole body in one buffer (for promotion to memory).
    pub fn read_all(mut self) -> Result<Bytes, DiskError> {
        if self.ready.len() == 1 {
            return Ok(self.ready.pop_front().unwrap_or_default());
        }
        let mut body = BytesMut::with_capacity(self.body_len as usize);
        while let Some(chunk) = self.next_chunk()? {
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    fn corrupt(&self, what: Corruption) -> DiskError {
        DiskError::Corrupt {
            path: self.path.clone(),
            what,
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`; a file that ends first is corrupt.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| match e.kind() {
                ErrorKind::UnexpectedEof => self.corrupt(Corruption::Short {
                    wanted: offset + buf.len() as u64,
                }),
                _ => DiskError::io(DiskOp::Read, &self.path, e),
            })
    }

    fn check_header(&self) -> Result<(), DiskError> {
        let mut header = [0; FILE_HEADER as usize];
        self.read_at(&mut header, 0)?;
        format::check_file_header(&header, self.id, self.body_len)
            .map_err(|what| self.corrupt(what))
    }

    /// The next frame's body bytes, checked; at the end, the whole body's checksum checked.
    fn read_frame(&mut self) -> Result<Option<Bytes>, DiskError> {
        if self.next_frame == format::frames(self.body_len) {
            let found = self.body_sum.digest();
            if found != self.checksum {
                return Err(self.corrupt(Corruption::Body {
                    found,
                    expected: self.checksum,
                }));
            }
            self.ended = Some(Ok(()));
            return Ok(None);
        }
        let (offset, len) = format::frame_at(self.body_len, self.next_frame);
        let mut buf = BytesMut::zeroed(len as usize + 8);
        self.read_at(&mut buf, offset)?;
        let sum = buf.split_off(len as usize);
        let sum = u64::from_le_bytes(sum[..].try_into().expect("8 bytes"));
        if format::frame_sum(self.id, self.next_frame, &buf) != sum {
            return Err(self.corrupt(Corruption::Chunk {
                chunk: self.next_frame,
            }));
        }
        self.body_sum.update(&buf);
        self.next_frame += 1;
        Ok(Some(buf.freeze()))
    }

    /// A fault: counted, the entry dropped from the index, nothing more read.
    fn fail(&mut self, error: DiskError) -> DiskError {
        self.ready.clear();
        let change = Change::Drop {
            key: self.key.clone(),
            id: self.id,
        };
        if let Err(e) = self.inner.submit(change) {
            tracing::warn!("{e}");
        }
        let error = self.inner.fault(error);
        self.ended = Some(Err(error.clone()));
        error
    }
}
