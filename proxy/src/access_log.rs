//! The access log in Squid's native format, so existing log tools read it:
//! `time elapsed client code/status bytes method URL ident hierarchy/from type`.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use canopy_config::files::{self, FileError};

/// What became of a request; written as Squid's result code (`TCP_HIT`, `TCP_MISS`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogCode {
    /// A fresh stored response.
    Hit,
    /// A stale stored response the request's `max-stale` accepts (a hit, as Squid logs it).
    HitStale,
    /// A stale stored response served while it is revalidated in the background.
    StaleHit,
    /// A stored response revalidated: unchanged upstream.
    RefreshUnmodified,
    /// Revalidated, and upstream sent a new response.
    RefreshModified,
    /// Revalidation failed and the stale response was served.
    RefreshFailOld,
    Miss,
    Denied,
    Tunnel,
}

impl LogCode {
    pub fn squid(self) -> &'static str {
        match self {
            LogCode::Hit | LogCode::HitStale => "TCP_HIT",
            LogCode::StaleHit => "TCP_STALE_HIT",
            LogCode::RefreshUnmodified => "TCP_REFRESH_UNMODIFIED",
            LogCode::RefreshModified => "TCP_REFRESH_MODIFIED",
            LogCode::RefreshFailOld => "TCP_REFRESH_FAIL_OLD",
            LogCode::Miss => "TCP_MISS",
            LogCode::Denied => "TCP_DENIED",
            LogCode::Tunnel => "TCP_TUNNEL",
        }
    }
}

/// Where a request was forwarded; written as Squid's hierarchy code (`HIER_DIRECT`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HierCode {
    /// Not forwarded: served from the cache, answered or refused here.
    None,
    /// To the origin server.
    Direct,
    /// A sibling that answered ICP HIT.
    SiblingHit,
    /// An ICP parent that answered HIT.
    ParentHit,
    /// The fastest ICP parent that answered MISS.
    FirstParentMiss,
    /// The first parent up, in the order listed.
    FirstUpParent,
    /// A parent picked by rotation or hashing.
    RoundRobinParent,
    /// A parent marked `default`, as the last resort.
    DefaultParent,
    /// The parent CARP picked (`round_robin carp`), logged as Squid logs it.
    Carp,
    /// A sibling whose cache digest says it holds the object.
    CdSiblingHit,
    /// A parent whose cache digest says it holds the object.
    CdParentHit,
}

impl HierCode {
    pub fn squid(self) -> &'static str {
        match self {
            HierCode::None => "HIER_NONE",
            HierCode::Direct => "HIER_DIRECT",
            HierCode::SiblingHit => "SIBLING_HIT",
            HierCode::ParentHit => "PARENT_HIT",
            HierCode::FirstParentMiss => "FIRST_PARENT_MISS",
            HierCode::FirstUpParent => "FIRSTUP_PARENT",
            HierCode::RoundRobinParent => "ROUNDROBIN_PARENT",
            HierCode::DefaultParent => "DEFAULT_PARENT",
            HierCode::Carp => "CARP",
            HierCode::CdSiblingHit => "CD_SIBLING_HIT",
            HierCode::CdParentHit => "CD_PARENT_HIT",
        }
    }
}

impl fmt::Display for HierCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.squid())
    }
}

/// The hierarchy field: how the request was forwarded and to which host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub code: HierCode,
    /// Empty when there is none (written `-`).
    pub host: String,
}

impl Hierarchy {
    /// Not forwarded; costs no allocation.
    pub const NONE: Hierarchy = Hierarchy {
        code: HierCode::None,
        host: String::new(),
    };

    pub fn new(code: HierCode, host: impl Into<String>) -> Hierarchy {
        Hierarchy {
            code,
            host: host.into(),
        }
    }
}

impl fmt::Display for Hierarchy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.is_empty() {
            "-"
        } else {
            &self.host
        };
        write!(f, "{}/{host}", self.code)
    }
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct Entry {
    pub time: SystemTime,
    pub elapsed: Duration,
    pub client: IpAddr,
    pub result: LogCode,
    pub status: u16,
    pub bytes: u64,
    pub method: String,
    pub url: String,
    pub hierarchy: Hierarchy,
    pub content_type: String,
}

impl Entry {
    pub fn to_line(&self) -> String {
        let since = self.time.duration_since(UNIX_EPOCH).unwrap_or_default();
        format!(
            "{}.{:03} {:>6} {} {}/{:03} {} {} {} - {} {}",
            since.as_secs(),
            since.subsec_millis(),
            self.elapsed.as_millis(),
            self.client,
            self.result.squid(),
            self.status,
            self.bytes,
            self.method,
            self.url,
            self.hierarchy,
            if self.content_type.is_empty() {
                "-"
            } else {
                &self.content_type
            }
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("{0}")]
    File(#[from] FileError),
    #[error("starting the writer of {path}: {source}")]
    Writer {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the writer thread is asked to do.
enum Message {
    Write(Entry),
    /// Close the file and open the path again (after a rotation), then say how it went.
    Reopen(oneshot::Sender<std::io::Result<()>>),
}

/// Where entries go: a background writer so the request path never waits on the disk.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<Message>,
    path: Arc<Path>,
}

impl AccessLog {
    /// Opens (appending) `path`, readable by the admin and the admin's group only, and
    /// starts its writer.
    pub fn open(path: &Path) -> Result<AccessLog, AccessLogError> {
        let file = files::private_file(path, files::LOG_MODE)?;
        let (tx, mut rx) = mpsc::channel::<Message>(4096);
        let reopened: Arc<Path> = path.into();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                while let Some(message) = rx.blocking_recv() {
                    match message {
                        Message::Write(entry) => {
                            let _ = writeln!(out, "{}", entry.to_line());
                        }
                        Message::Reopen(done) => {
                            let result = out.flush().and_then(|()| open_file(&reopened));
                            let _ = done.send(result.map(|file| {
                                out = std::io::BufWriter::new(file);
                            }));
                        }
                    }
                    // Flush whenever the queue is drained, so the log is current when idle.
                    if rx.is_empty() {
                        let _ = out.flush();
                    }
                }
            })
            .map_err(|source| AccessLogError::Writer {
                path: path.to_owned(),
                source,
            })?;
        Ok(AccessLog {
            tx,
            path: path.into(),
        })
    }

    /// Queues an entry; when the writer is far behind the entry is dropped, not awaited.
    pub fn write(&self, entry: Entry) {
        if self.tx.try_send(Message::Write(entry)).is_err() {
            tracing::warn!("access log writer is behind; an entry was dropped");
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes out what is queued, then opens the path again, so that a log renamed away
    /// (rotated) is closed and later entries go to a fresh file. On failure the writer keeps
    /// the file it had.
    pub async fn reopen(&self) -> Result<(), ReopenError> {
        let failed = |e| ReopenError {
            path: self.path.to_path_buf(),
            source: e,
        };
        let stopped = || failed(std::io::Error::other("the access log writer has stopped"));
        let (done, outcome) = oneshot::channel();
        self.tx
            .send(Message::Reopen(done))
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?.map_err(failed)
    }
}

/// The access log could not be opened again.
#[derive(Debug, thiserror::Error)]
#[error("cannot reopen the access log {}: {source}", path.display())]
pub struct ReopenError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The log as rotated away and opened again keeps the mode of the first one.
fn open_file(path: &Path) -> std::io::Result<std::fs::File> {
    files::private_file(path, files::LOG_MODE).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_squids_native_format() {
        let entry = Entry {
            time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            elapsed: Duration::from_millis(45),
            client: "127.0.0.1".parse().unwrap(),
            result: LogCode::Miss,
            status: 200,
            bytes: 1234,
            method: "GET".into(),
            url: "http://example.com/".into(),
            hierarchy: Hierarchy::new(HierCode::Direct, "example.com"),
            content_type: "text/html".into(),
        };
        assert_eq!(
            entry.to_line(),
            "1700000000.123     45 127.0.0.1 TCP_MISS/200 1234 GET http://example.com/ - HIER_DIRECT/example.com text/html"
        );
    }
}
