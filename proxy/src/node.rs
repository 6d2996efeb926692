//! This proxy as a node of its database: its name, whether the database answers, and the
//! config version it last applied with the peers then down by hand, kept in the data dir so
//! that the node can start on them while a fleet's PostgreSQL is unreachable.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use canopy_config::config::Config;
use canopy_config::control::DatabaseDown;
use canopy_config::files;
use canopy_config::maintenance::Maintenance;
use canopy_config::versions::{now_rfc3339, ConfigVersion};

pub use canopy_config::nodes::LAST_APPLIED_FILE;

#[derive(Debug, thiserror::Error)]
pub enum LocalVersionError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a config version this Canopy can read: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Files(#[from] files::FileError),
}

/// The node's name and what it knows of its database.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub started_at: String,
    /// `None` while the database answers.
    down: Mutex<Option<DatabaseDown>>,
    /// The config (the version in force with this node's own settings) that could not be
    /// applied, so that the regular check does not try it again until they change.
    refused_own: Mutex<Option<Config>>,
}

impl Node {
    pub fn new(name: String) -> Node {
        Node {
            name,
            started_at: now_rfc3339(),
            down: Mutex::new(None),
            refused_own: Mutex::new(None),
        }
    }

    /// Whether `config` is the one this node's own settings last failed with.
    pub fn refused_own(&self, config: &Config) -> bool {
        self.refused_own
            .lock()
            .is_ok_and(|refused| refused.as_ref() == Some(config))
    }

    /// Remembers the config this node's own settings failed with (`None`: they applied).
    pub fn set_refused_own(&self, config: Option<Config>) {
        if let Ok(mut refused) = self.refused_own.lock() {
            *refused = config;
        }
    }

    /// Since when, and why, the database does not answer; `None` while it does.
    pub fn database_down(&self) -> Option<DatabaseDown> {
        self.down.lock().ok().and_then(|down| down.clone())
    }

    /// The database failed: said in the log the first time, kept for `canopy status`.
    pub fn lost(&self, error: &dyn std::fmt::Display, in_force: i64) {
        let Ok(mut down) = self.down.lock() else {
            return;
        };
        if down.is_none() {
            tracing::error!(
                "database unreachable: {error}; config version {in_force} stays in force, \
                 kept in the data dir, until it is back"
            );
        }
        *down = Some(DatabaseDown {
            since: down
                .as_ref()
                .map_or_else(now_rfc3339, |was| was.since.clone()),
            error: error.to_string(),
        });
    }

    /// The database answered; true when it had not before (the caller catches up).
    pub fn reached(&self) -> bool {
        let back = self.down.lock().ok().and_then(|mut down| down.take());
        if let Some(was) = &back {
            tracing::info!(
                "database reachable again (unreachable since {}); catching up",
                was.since
            );
        }
        back.is_some()
    }
}

/// What the data dir keeps to start on without the database: the version last applied
/// here, and the peers down by hand (an offline start keeps them down). A file written
/// before the peers were kept reads as none down.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastApplied {
    #[serde(flatten)]
    pub version: ConfigVersion,
    #[serde(default)]
    pub peers_down: Vec<Maintenance>,
}

/// Keeps `last` as what was last applied here: written aside, then moved over the old
/// file, so a crash leaves the old one or the new one whole.
pub fn keep_last_applied(data_dir: &Path, last: &LastApplied) -> Result<(), LocalVersionError> {
    let path = data_dir.join(LAST_APPLIED_FILE);
    let aside = data_dir.join(format!("{LAST_APPLIED_FILE}.new"));
    let io = |source| LocalVersionError::Io {
        path: path.clone(),
        source,
    };
    let text = serde_json::to_vec_pretty(last).map_err(|source| LocalVersionError::Unreadable {
        path: path.clone(),
        source,
    })?;
    let mut file = files::private_file(&aside, files::DATABASE_MODE)?;
    file.set_len(0).map_err(io)?;
    std::io::Write::write_all(&mut file, &text).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&aside, &path).map_err(io)
}

/// The version last applied here and the peers then down by hand, when they were kept.
pub fn last_applied(data_dir: &Path) -> Result<Option<LastApplied>, LocalVersionError> {
    let path = data_dir.join(LAST_APPLIED_FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LocalVersionError::Io { path, source }),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| LocalVersionError::Unreadable { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_config::config::Config;
    use canopy_config::versions::VersionState;

    #[test]
    fn the_version_last_applied_and_the_peers_down_are_kept_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(last_applied(dir.path()).unwrap().is_none());
        let mut config = Config::default();
        config.set("http_port", "3199").unwrap();
        let version = ConfigVersion {
            id: 7,
            created_at: now_rfc3339(),
            author: "alice".to_owned(),
            summary: "http_port: 3128 → 3199".to_owned(),
            config,
            state: VersionState::Applied,
            state_reason: None,
            state_at: None,
            canary: None,
        };
        let old_format = serde_json::to_vec(&version).unwrap();
        std::fs::write(dir.path().join(LAST_APPLIED_FILE), old_format).unwrap();
        let read = last_applied(dir.path()).unwrap().unwrap();
        assert_eq!(read.version.config, version.config);
        assert!(
            read.peers_down.is_empty(),
            "a file of before keeps none down"
        );
        let last = LastApplied {
            version,
            peers_down: vec![Maintenance {
                name: "squid".to_owned(),
                reason: "new disks".to_owned(),
                by: "alice".to_owned(),
                at: now_rfc3339(),
            }],
        };
        keep_last_applied(dir.path(), &last).unwrap();
        let read = last_applied(dir.path()).unwrap().unwrap();
        assert_eq!((read.version.id, read.peers_down), (7, last.peers_down));
    }
}
