//! What can go wrong on disk: every error names the operation and the path, so the log and
//! the console say which file failed how; the store counts them by kind and stays usable.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskOp {
    CreateDir,
    ListDir,
    CreateFile,
    Write,
    Sync,
    Rename,
    Open,
    Read,
    Remove,
    OpenIndex,
    ReadIndex,
    WriteIndex,
}

impl DiskOp {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskOp::CreateDir => "create directory",
            DiskOp::ListDir => "list directory",
            DiskOp::CreateFile => "create file",
            DiskOp::Write => "write",
            DiskOp::Sync => "sync",
            DiskOp::Rename => "rename",
            DiskOp::Open => "open",
            DiskOp::Read => "read",
            DiskOp::Remove => "remove",
            DiskOp::OpenIndex => "open index",
            DiskOp::ReadIndex => "read index",
            DiskOp::WriteIndex => "write index",
        }
    }
}

impl fmt::Display for DiskOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How stored bytes were found not to be what was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("chunk {chunk} fails its checksum")]
    Chunk { chunk: u64 },
    #[error("body checksum {found:016x}, {expected:016x} recorded")]
    Body { found: u64, expected: u64 },
    #[error("file header says object {found_id} of {found_len} bytes, the index object {id} of {len} bytes")]
    Header {
        found_id: u64,
        found_len: u64,
        id: u64,
        len: u64,
    },
    #[error("file header magic {found:02x?}, not a Canopy disk cache object")]
    Magic { found: [u8; 8] },
    #[error("file format {found}, this Canopy reads {expected}")]
    FileFormat { found: u64, expected: u64 },
    #[error("file ends before byte {wanted}")]
    Short { wanted: u64 },
    #[error("index record unreadable at byte {at}")]
    Record { at: usize },
}

/// A disk cache error. `Clone`, since one failed index commit answers every change it held.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiskError {
    #[error("disk cache: {op} {path}: {source}")]
    Io {
        op: DiskOp,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("disk cache index {path}: {op}: {source}")]
    Index {
        op: DiskOp,
        path: PathBuf,
        #[source]
        source: Arc<redb::Error>,
    },
    #[error("disk cache index {path} is closed after an error, and could not be opened again")]
    IndexClosed { path: PathBuf },
    #[error("disk cache: {path} is corrupt: {what}")]
    Corrupt { path: PathBuf, what: Corruption },
    #[error("disk cache: {path} was removed since it was looked up")]
    Gone { path: PathBuf },
    #[error("disk cache: an object of {size} bytes or more does not fit in {capacity} bytes")]
    TooLarge { size: u64, capacity: u64 },
    #[error("disk cache: its {threads} threads could not be started: {source}")]
    Threads {
        threads: usize,
        #[source]
        source: Arc<io::Error>,
    },
}

/// The kinds of fault the store counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No space left on the device (or quota).
    Full,
    /// Any other error of the file system or the device.
    Io,
    /// Bytes read back that are not those written.
    Corrupt,
}

impl DiskError {
    pub(super) fn io(op: DiskOp, path: impl Into<PathBuf>, source: io::Error) -> DiskError {
        DiskError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(super) fn index(
        op: DiskOp,
        path: impl Into<PathBuf>,
        source: impl Into<redb::Error>,
    ) -> DiskError {
        DiskError::Index {
            op,
            path: path.into(),
            source: Arc::new(source.into()),
        }
    }

    /// Whether redb now refuses every transaction until the index is opened again.
    pub(super) fn closes_index(&self) -> bool {
        matches!(self, DiskError::Index { source, .. }
            if matches!(source.as_ref(), redb::Error::Io(_) | redb::Error::PreviousIo))
    }

    /// The fault this error counts as; `None` for an object refused by size (policy) or
    /// removed meanwhile.
    pub fn fault(&self) -> Option<Fault> {
        let full = |e: &io::Error| e.kind() == io::ErrorKind::StorageFull;
        match self {
            DiskError::Io { source, .. } if full(source) => Some(Fault::Full),
            DiskError::Index { source, .. } => match source.as_ref() {
                redb::Error::Io(e) if full(e) => Some(Fault::Full),
                redb::Error::Corrupted(_) => Some(Fault::Corrupt),
                _ => Some(Fault::Io),
            },
            DiskError::Io { .. } | DiskError::IndexClosed { .. } | DiskError::Threads { .. } => {
                Some(Fault::Io)
            }
            DiskError::Corrupt { .. } => Some(Fault::Corrupt),
            DiskError::TooLarge { .. } | DiskError::Gone { .. } => None,
        }
    }
}

/// Where in the index an operation happens, to turn redb's errors into [`DiskError`]s.
pub(super) struct IndexAt<'a> {
    pub op: DiskOp,
    pub path: &'a Path,
}

pub(super) trait InIndex<T> {
    fn at(self, at: &IndexAt<'_>) -> Result<T, DiskError>;
}

impl<T, E: Into<redb::Error>> InIndex<T> for Result<T, E> {
    fn at(self, at: &IndexAt<'_>) -> Result<T, DiskError> {
        self.map_err(|e| DiskError::index(at.op, at.path, e))
    }
}
