//! The console's calls to the running proxy over its control socket, each bounded in time
//! so that a stuck proxy cannot hang a page.

use std::path::Path;
use std::time::Duration;

use canopy_config::control::{call_typed, Command, ControlError, ReloadReply, StatusReply};
use canopy_config::purge::{PurgeError, Purged};
use canopy_config::stats::{PeerSnapshot, StatsSnapshot};
use serde::de::DeserializeOwned;

/// Status and stats answer at once; a page waits this long at most.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// A reload binds sockets and builds a peer table; it may take longer.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

async fn bounded<T: DeserializeOwned>(
    path: &Path,
    command: Command,
    limit: Duration,
) -> Result<T, ControlError> {
    tokio::time::timeout(limit, call_typed(path, command))
        .await
        .unwrap_or_else(|_| {
            Err(ControlError::Protocol(format!(
                "no answer within {} s",
                limit.as_secs()
            )))
        })
}

pub async fn status(path: &Path) -> Result<StatusReply, ControlError> {
    bounded(path, Command::Status, QUERY_TIMEOUT).await
}

pub async fn stats(path: &Path) -> Result<StatsSnapshot, ControlError> {
    bounded(path, Command::Stats, QUERY_TIMEOUT).await
}

/// Takes the peer or HTTP parent `name` down by hand (`Some(reason)`), or brings it up
/// (`None`); `by` is the console account that asked.
pub async fn set_peer(
    path: &Path,
    name: &str,
    down: Option<String>,
    by: &str,
) -> Result<PeerSnapshot, ControlError> {
    let command = Command::Peer {
        name: name.to_owned(),
        down: down.is_some(),
        reason: down,
        by: Some(by.to_owned()),
    };
    bounded(path, command, QUERY_TIMEOUT).await
}

/// Removes every stored variant of `url` from the proxy's cache (a PURGE to its listener).
pub async fn purge(path: &Path, url: &str) -> Result<Purged, PurgeError> {
    tokio::time::timeout(QUERY_TIMEOUT, canopy_config::purge::purge(path, url))
        .await
        .unwrap_or_else(|_| {
            Err(PurgeError::Control(ControlError::Protocol(format!(
                "no answer within {} s",
                QUERY_TIMEOUT.as_secs()
            ))))
        })
}

pub async fn reload(path: &Path) -> Result<ReloadReply, ControlError> {
    bounded(path, Command::Reload, RELOAD_TIMEOUT).await
}
