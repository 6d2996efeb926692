//! The control socket's server: listens, reads each request line and has the proxy answer it.
//! The protocol (commands, replies, the client) is in [`canopy_config::control`].

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::maintenance::MaintenanceError;
use canopy_config::control::{
    CacheListReply, Command, ReloadReply, ReopenReply, StatusReply, MAX_CACHE_LIST, MAX_LINE,
};
use canopy_config::maintenance::Maintenance;
use canopy_config::stats::{PeerSnapshot, StatsSnapshot};
use canopy_config::versions::now_rfc3339;

/// What the `peer` command asks of the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    Down(Maintenance),
    Up { name: String, by: String },
}

/// What a proxy must do for each command.
pub trait ControlHandler: Send + Sync + 'static {
    fn status(&self) -> impl Future<Output = StatusReply> + Send;
    fn stats(&self) -> StatsSnapshot;
    /// Applies the newest config version; `Err` says why the old one stays in force.
    fn reload(&self) -> impl Future<Output = Result<ReloadReply, String>> + Send;
    /// Takes a peer or an HTTP parent down by hand, or brings it up.
    fn set_peer(
        &self,
        change: PeerChange,
    ) -> impl Future<Output = Result<PeerSnapshot, MaintenanceError>> + Send;
    /// Reopens the access log; `Err` says why the old file is still written.
    fn reopen_logs(&self) -> impl Future<Output = Result<ReopenReply, String>> + Send;
    /// The first `limit` URLs held (either tier) that start with `prefix`.
    fn cache_list(
        &self,
        prefix: String,
        limit: usize,
    ) -> impl Future<Output = CacheListReply> + Send;
}

/// Listens on `path` (replacing a stale socket file) with mode 0600.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another proxy is already listening on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves control connections until the listener fails.
pub async fn serve<H: ControlHandler>(listener: UnixListener, handler: Arc<H>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let handler = handler.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream, handler).await {
                        tracing::debug!("control connection ended: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_connection<H: ControlHandler>(
    stream: UnixStream,
    handler: Arc<H>,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let reply = if line.len() > MAX_LINE && !line.ends_with(b"\n") {
            skip_rest_of_line(&mut reader).await?;
            error_reply(format!(
                "request line longer than {MAX_LINE} bytes; one JSON object per line"
            ))
        } else {
            answer(&line, &*handler).await
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_default();
        out.push(b'\n');
        write.write_all(&out).await?;
    }
}

async fn skip_rest_of_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<()> {
    let mut sink = Vec::new();
    loop {
        sink.clear();
        let n = reader
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut sink)
            .await?;
        if n == 0 || sink.ends_with(b"\n") {
            return Ok(());
        }
    }
}

async fn answer<H: ControlHandler>(line: &[u8], handler: &H) -> Value {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return error_reply(
            "empty request; expected {\"cmd\":\"status\"}, \"stats\" or \"reload\"",
        );
    }
    let command: Command = match serde_json::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            return error_reply(format!(
                "cannot read request {:?}: {e}; expected {{\"cmd\":\"status\"}}, \"stats\" or \"reload\"",
                truncate(text, 80)
            ))
        }
    };
    match command {
        Command::Status => ok_reply(handler.status().await),
        Command::Stats => ok_reply(handler.stats()),
        Command::Reload => match handler.reload().await {
            Ok(reply) => ok_reply(reply),
            Err(reason) => error_reply(reason),
        },
        Command::Peer {
            name,
            down,
            reason,
            by,
        } => match handler.set_peer(peer_change(name, down, reason, by)).await {
            Ok(reply) => ok_reply(reply),
            Err(e) => error_reply(e.to_string()),
        },
        Command::Reopen => match handler.reopen_logs().await {
            Ok(reply) => ok_reply(reply),
            Err(reason) => error_reply(reason),
        },
        Command::CacheList { prefix, limit } => ok_reply(
            handler
                .cache_list(prefix, limit.unwrap_or(MAX_CACHE_LIST))
                .await,
        ),
    }
}

fn peer_change(name: String, down: bool, reason: Option<String>, by: Option<String>) -> PeerChange {
    let by = by
        .filter(|by| !by.trim().is_empty())
        .unwrap_or_else(|| "the control socket".to_owned());
    if !down {
        return PeerChange::Up { name, by };
    }
    PeerChange::Down(Maintenance {
        name,
        reason: reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "no reason given".to_owned()),
        by,
        at: now_rfc3339(),
    })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn ok_reply(body: impl Serialize) -> Value {
    let mut value = serde_json::to_value(body).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut value {
        map.insert("ok".into(), Value::Bool(true));
    }
    value
}

fn error_reply(error: impl Into<String>) -> Value {
    json!({ "ok": false, "error": error.into() })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::stats::Stats;
    use canopy_config::control::{call, call_typed, ControlError};

    struct Fixed;

    impl ControlHandler for Fixed {
        async fn status(&self) -> StatusReply {
            StatusReply {
                pid: 7,
                version: "test".into(),
                uptime_s: 1,
                config_version: 3,
                rejected_version: None,
                http_listen: "127.0.0.1:3128".into(),
                node: "test".into(),
                database_down: None,
                icp_listen: None,
                manager_listen: "127.0.0.1:3129".into(),
            }
        }
        fn stats(&self) -> StatsSnapshot {
            Stats::default().snapshot(0, 0)
        }
        async fn reload(&self) -> Result<ReloadReply, String> {
            Err("icp_port 3130: address in use".into())
        }
        async fn set_peer(&self, change: PeerChange) -> Result<PeerSnapshot, MaintenanceError> {
            let PeerChange::Down(down) = change else {
                panic!("only down is sent");
            };
            Ok(PeerSnapshot {
                name: down.name,
                health: canopy_config::stats::HealthSnapshot {
                    down: true,
                    down_since: Some(down.at),
                    down_reason: Some(down.reason),
                    down_by_hand: true,
                    down_by: Some(down.by),
                },
                ..PeerSnapshot::default()
            })
        }
        async fn reopen_logs(&self) -> Result<ReopenReply, String> {
            Ok(ReopenReply {
                access_log: Some("access.log".into()),
            })
        }
        async fn cache_list(&self, prefix: String, limit: usize) -> CacheListReply {
            CacheListReply {
                urls: Vec::new(),
                limit,
                truncated: false,
                disk_unlisted: Some(prefix),
            }
        }
    }

    async fn start() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("canopy.sock");
        let listener = bind(&path).unwrap();
        tokio::spawn(serve(listener, Arc::new(Fixed)));
        (dir, path)
    }

    #[tokio::test]
    async fn commands_get_typed_replies() {
        let (_dir, path) = start().await;
        let status: StatusReply = call_typed(&path, Command::Status).await.unwrap();
        assert_eq!(status.config_version, 3);
        let err = call(&path, Command::Reload).await.unwrap_err();
        assert_eq!(err.to_string(), "icp_port 3130: address in use");
        let down: PeerSnapshot = call_typed(
            &path,
            Command::Peer {
                name: "squid".into(),
                down: true,
                reason: Some("  ".into()),
                by: Some("alice".into()),
            },
        )
        .await
        .unwrap();
        assert_eq!(down.health.down_reason.as_deref(), Some("no reason given"));
        assert_eq!(down.health.down_by.as_deref(), Some("alice"));
        let reopened: ReopenReply = call_typed(&path, Command::Reopen).await.unwrap();
        assert_eq!(reopened.access_log.as_deref(), Some("access.log"));
        let listed: CacheListReply = call_typed(
            &path,
            Command::CacheList {
                prefix: "http://a/".into(),
                limit: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(listed.limit, MAX_CACHE_LIST);
        assert_eq!(listed.disk_unlisted.as_deref(), Some("http://a/"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn garbage_gets_an_error_and_the_connection_goes_on() {
        let (_dir, path) = start().await;
        let stream = UnixStream::connect(&path).await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        for bad in [
            "garbage\n".to_owned(),
            "{\"cmd\":\"explode\"}\n".to_owned(),
            format!("{}\n", "x".repeat(MAX_LINE + 10)),
        ] {
            write.write_all(bad.as_bytes()).await.unwrap();
            let reply: Value =
                serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
            assert_eq!(reply["ok"], false);
            assert!(reply["error"].as_str().unwrap().len() > 10);
        }
        write.write_all(b"{\"cmd\":\"stats\"}\n").await.unwrap();
        let reply: Value =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(reply["ok"], true);
        assert_eq!(reply["requests"], 0);
    }

    #[tokio::test]
    async fn a_missing_socket_means_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let err = call(&dir.path().join("none.sock"), Command::Status)
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::NotRunning(_)));
        assert!(err.to_string().contains("not running"));
    }
}
