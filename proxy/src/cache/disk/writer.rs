//! Writing one object: the body as it arrives, a frame at a time, into a file of its own in
//! `tmp/`; visible only once [`DiskWriter::commit`] returns. A writer dropped before that
//! (the fetch broke, the body grew too large) removes its file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3;

use super::error::{DiskError, DiskOp};
use super::format::{self, Record, CHUNK};
use super::index::{Change, Inner};
use super::ObjectHead;

/// A new object being written. Holds at most one frame (64 KiB) of the body.
pub struct DiskWriter {
    inner: Arc<Inner>,
    key: Vec<u8>,
    head: ObjectHead,
    id: u64,
    path: PathBuf,
    file: File,
    /// The frame being filled, with room for its checksum.
    frame: Vec<u8>,
    frames: u64,
    body_len: u64,
    body_sum: Xxh3,
    committed: bool,
}

impl DiskWriter {
    pub(super) fn create(
        inner: Arc<Inner>,
        url: &str,
        head: ObjectHead,
    ) -> Result<DiskWriter, DiskError> {
        let id = inner.next_id.fetch_add(1, Relaxed);
        let path = format::temp_path(&inner.dir, id);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| DiskError::io(DiskOp::CreateFile, &path, e))?;
        let key = format::object_key(url, head.vary.as_deref());
        let mut writer = DiskWriter {
            inner,
            key,
            head,
            id,
            path,
            file,
            frame: Vec::with_capacity(CHUNK as usize + 8),
            frames: 0,
            body_len: 0,
            body_sum: Xxh3::new(),
            committed: false,
        };
        // The header is written again with the length at commit; this reserves its place.
        let header = format::file_header(id, 0);
        writer.write_file(&header)?;
        Ok(writer)
    }

    /// Appends body bytes. An error leaves the writer useless: drop it.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), DiskError> {
        let size = format::file_len(self.body_len + data.len() as u64);
        let capacity = self.inner.capacity.load(Relaxed);
        if size > capacity {
            return Err(DiskError::TooLarge { size, capacity });
        }
        while !data.is_empty() {
            let room = CHUNK as usize - self.frame.len();
            let (now, later) = data.split_at(room.min(data.len()));
            self.frame.extend_from_slice(now);
            self.body_sum.update(now);
            self.body_len += now.len() as u64;
            data = later;
            if self.frame.len() == CHUNK as usize {
                self.flush_frame()?;
            }
        }
        Ok(())
    }

    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    fn flush_frame(&mut self) -> Result<(), DiskError> {
        let sum = format::frame_sum(self.id, self.frames, &self.frame);
        self.frame.extend_from_slice(&sum.to_le_bytes());
        let frame = std::mem::take(&mut self.frame);
        let written = self.write_file(&frame);
        self.frame = frame;
        self.frame.clear();
        self.frames += 1;
        written
    }

    fn write_file(&mut self, bytes: &[u8]) -> Result<(), DiskError> {
        let result = self.file.write_all(bytes);
        result.map_err(|e| {
            self.inner
                .fault(DiskError::io(DiskOp::Write, &self.path, e))
        })
    }

    /// Makes the object durable and visible: the last frame and the header written, the
    /// file synced, then its record committed to the index.
    pub fn commit(mut self) -> Result<(), DiskError> {
        if !self.frame.is_empty() {
            self.flush_frame()?;
        }
        let fault = |inner: &Inner, op, path: &PathBuf, e| inner.fault(DiskError::io(op, path, e));
        let header = format::file_header(self.id, self.body_len);
        self.file
            .write_all_at(&header, 0)
            .map_err(|e| fault(&self.inner, DiskOp::Write, &self.path, e))?;
        self.file
            .sync_all()
            .map_err(|e| fault(&self.inner, DiskOp::Sync, &self.path, e))?;
        let record = Record {
            id: self.id,
            body_len: self.body_len,
            checksum: self.body_sum.digest(),
            head: self.head.clone(),
        };
        let weight = format::file_len(self.body_len) + record.encode().len() as u64;
        let change = Change::Insert {
            key: std::mem::take(&mut self.key),
            record,
            weight,
        };
        self.inner.submit(change)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        if !self.committed {
            // Not in the index: whatever is left of it is removed at the next open anyway.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
