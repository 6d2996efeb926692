//! The control socket's protocol and its client: how `canopy` and the manager talk to a
//! running proxy (the server is the proxy's).
//!
//! A Unix stream socket, mode 0600. Each request is one JSON object on one line, and each
//! gets one JSON object on one line back: `{"cmd":"status"}`, `{"cmd":"stats"}`,
//! `{"cmd":"reload"}`, `{"cmd":"peer","name":"squid","down":true,"reason":"...","by":"alice"}`
//! to take a peer or an HTTP parent (`host:port`) down by hand (or up, with `"down":false`;
//! `"cmd":"parent"` is the same command), and `{"cmd":"reopen"}` to reopen the access log
//! after it was renamed away (as SIGHUP does).
//! `{"cmd":"cache_list","prefix":"http://example.com/","limit":100}` lists the URLs held
//! whose URL starts with the prefix, in URL order, at most `limit` of them
//! ([`MAX_CACHE_LIST`] at most); the reply says whether more matched.
//! Every reply carries `"ok"`; when it is false, `"error"` says why.
//! A line longer than 64 KiB, bad JSON or an unknown command gets an error reply and the
//! connection stays usable; nothing a client sends can stop the proxy.

use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Command {
    Status,
    Stats,
    Reload,
    /// Takes a peer or an HTTP parent down by hand (with a reason), or brings it back up.
    #[serde(alias = "parent")]
    Peer {
        name: String,
        down: bool,
        #[serde(default)]
        reason: Option<String>,
        /// Who asked: the console account, or the OS user of the `canopy` command.
        #[serde(default)]
        by: Option<String>,
    },
    /// Reopens the access log (after logrotate or `mv` renamed it).
    Reopen,
    /// The URLs held in either tier whose URL starts with `prefix`, in URL order.
    #[serde(rename = "cache_list")]
    CacheList {
        #[serde(default)]
        prefix: String,
        /// At most this many URLs ([`MAX_CACHE_LIST`] if more, or none given).
        #[serde(default)]
        limit: Option<usize>,
    },
}

/// The most URLs one `cache_list` reply holds: the reply is one line.
pub const MAX_CACHE_LIST: usize = 10_000;

/// Where a URL's stored responses are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Memory,
    Disk,
    Both,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
            Tier::Both => "both",
        }
    }
}

/// One URL held, as `cache_list` shows it (as Squid's `mgr:objects` shows an entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedUrl {
    pub url: String,
    pub tier: Tier,
    /// Its Vary variants (1 for a response without Vary), both tiers together.
    pub variants: u64,
    /// Body bytes of its variants.
    pub bytes: u64,
    /// Of its newest variant: the status, when it was received, its current age and how
    /// much longer it is fresh (0: stale).
    pub status: u16,
    pub stored_at: String,
    pub age_s: u64,
    pub fresh_for_s: u64,
}

/// What `cache_list` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheListReply {
    pub urls: Vec<CachedUrl>,
    /// The limit applied.
    pub limit: usize,
    /// More URLs match than `limit`.
    pub truncated: bool,
    /// Why the disk tier's URLs are missing from the list (a fault reading its index).
    #[serde(default)]
    pub disk_unlisted: Option<String>,
}

/// What `status` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    pub pid: u32,
    pub version: String,
    pub uptime_s: u64,
    pub config_version: i64,
    /// The newest version the proxy refused, when it is newer than the one in force.
    pub rejected_version: Option<RejectedVersion>,
    pub http_listen: String,
    pub icp_listen: Option<String>,
    /// Where the console of the version in force listens.
    #[serde(default)]
    pub manager_listen: String,
    /// This node's name in the nodes table.
    #[serde(default)]
    pub node: String,
    /// The database (a fleet's PostgreSQL) does not answer: the node runs on the version
    /// it last applied, kept in its data dir.
    #[serde(default)]
    pub database_down: Option<DatabaseDown>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseDown {
    /// RFC 3339, UTC.
    pub since: String,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedVersion {
    pub id: i64,
    pub reason: String,
}

/// What a successful `reload` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReply {
    /// The version now in force.
    pub config_version: i64,
    /// False when the newest version was already in force.
    pub changed: bool,
    pub elapsed_ms: u64,
}

/// What a successful `reopen` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReopenReply {
    /// The log reopened; `None` when `access_log` is off.
    pub access_log: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the proxy is not running (nothing listens on {0})")]
    NotRunning(PathBuf),
    #[error("control socket {0}: {1}")]
    Io(PathBuf, io::Error),
    #[error("the proxy sent a reply that is not understood: {0}")]
    Protocol(String),
    #[error("{0}")]
    Refused(String),
}

/// Sends one command to the proxy listening on `path` and returns its reply.
pub async fn call(path: &Path, command: Command) -> Result<Value, ControlError> {
    let io_err = |e| ControlError::Io(path.to_owned(), e);
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning(path.to_owned()))
        }
        Err(e) => return Err(io_err(e)),
    };
    let (read, mut write) = stream.into_split();
    let mut request =
        serde_json::to_vec(&command).map_err(|e| ControlError::Protocol(e.to_string()))?;
    request.push(b'\n');
    write.write_all(&request).await.map_err(io_err)?;
    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .await
        .map_err(io_err)?;
    if line.is_empty() {
        return Err(ControlError::Protocol(
            "the proxy closed the connection".into(),
        ));
    }
    let reply: Value =
        serde_json::from_str(&line).map_err(|e| ControlError::Protocol(e.to_string()))?;
    if reply["ok"] == Value::Bool(true) {
        Ok(reply)
    } else {
        Err(ControlError::Refused(
            reply["error"]
                .as_str()
                .unwrap_or("no reason given")
                .to_owned(),
        ))
    }
}

/// [`call`], with the reply read as `T`.
pub async fn call_typed<T: DeserializeOwned>(
    path: &Path,
    command: Command,
) -> Result<T, ControlError> {
    let reply = call(path, command).await?;
    serde_json::from_value(reply).map_err(|e| ControlError::Protocol(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_command_is_the_peer_command() {
        let old: Command =
            serde_json::from_str(r#"{"cmd":"parent","name":"p:3128","down":false}"#).unwrap();
        assert_eq!(
            old,
            Command::Peer {
                name: "p:3128".into(),
                down: false,
                reason: None,
                by: None
            }
        );
    }

    #[test]
    fn cache_list_reads_with_or_without_its_fields() {
        let bare: Command = serde_json::from_str(r#"{"cmd":"cache_list"}"#).unwrap();
        assert_eq!(
            bare,
            Command::CacheList {
                prefix: String::new(),
                limit: None
            }
        );
        let sent = serde_json::to_string(&Command::CacheList {
            prefix: "http://a/".into(),
            limit: Some(5),
        })
        .unwrap();
        assert_eq!(
            sent,
            r#"{"cmd":"cache_list","prefix":"http://a/","limit":5}"#
        );
    }
}
