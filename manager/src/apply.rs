//! Make These Changes: save the form's config as a new version, ask the proxy to reload,
//! and say plainly which of the four things happened.

use canopy_config::config::{Config, ConfigErrors};
use canopy_config::control::ControlError;
use canopy_config::resolve::{unresolved_names, Unresolved};
use canopy_config::versions::{Db, VersionError};
use serde::Serialize;

use crate::proxy;
use crate::state::AppState;

/// What happened to a saved version when the proxy was asked to take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The proxy runs it now.
    Applied { version: i64, elapsed_ms: u64 },
    /// Saved; the proxy is down and will start with it.
    NotRunning { version: i64 },
    /// The proxy refused it; the version it names is still in force.
    Rejected {
        version: i64,
        reason: String,
        in_force: Option<i64>,
    },
    /// Saved, but the proxy's answer never came or was not understood.
    NoAnswer { version: i64, error: String },
}

impl Outcome {
    /// A CSS class: good news, a warning, or an error.
    pub fn tone(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "ok",
            Outcome::NotRunning { .. } => "warn",
            Outcome::Rejected { .. } | Outcome::NoAnswer { .. } => "error",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Outcome::Applied {
                version,
                elapsed_ms,
            } => format!("Applied: version {version} is in force (the proxy took {elapsed_ms} ms)."),
            Outcome::NotRunning { version } => format!(
                "Saved as version {version}, but the proxy is not running. It will start with this version."
            ),
            Outcome::Rejected {
                version,
                reason,
                in_force,
            } => {
                let still = match in_force {
                    Some(v) => format!("version {v} is still in force"),
                    None => "the previous version is still in force".to_owned(),
                };
                format!("Version {version} was saved but rejected by the proxy: {reason}. Nothing changed: {still}.")
            }
            Outcome::NoAnswer { version, error } => format!(
                "Saved as version {version}, but the proxy did not confirm the reload: {error}."
            ),
        }
    }
}

/// Why nothing was saved.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "this form was made from version {based_on}, but version {current} has been saved since"
    )]
    Stale { based_on: i64, current: i64 },
    #[error("{0}")]
    Invalid(ConfigErrors),
    #[error("{0}")]
    Db(VersionError),
}

/// Saves `config` as made by `author` from version `based_on`, then applies it. `what`
/// names the change in the history when the diff alone would not say it (a restore).
pub async fn make_these_changes(
    state: &AppState,
    config: &Config,
    author: &str,
    based_on: i64,
    what: Option<&str>,
) -> Result<Made, ApplyError> {
    let before = state.db.in_force().await.map_err(ApplyError::Db)?;
    let version = save(&state.db, config, author, based_on, what).await?;
    Ok(Made {
        outcome: reload(state, version).await,
        unresolved: unresolved_names(config, &before.config).await,
    })
}

/// What Make These Changes did, and the new host names that do not resolve (saved all the
/// same: they may resolve later).
#[derive(Debug, Clone)]
pub struct Made {
    pub outcome: Outcome,
    pub unresolved: Vec<Unresolved>,
}

async fn save(
    db: &Db,
    config: &Config,
    author: &str,
    based_on: i64,
    what: Option<&str>,
) -> Result<i64, ApplyError> {
    let saved = match what {
        None => db.save_change(config, author, Some(based_on)).await,
        Some(what) => db.save_labelled(config, author, what, Some(based_on)).await,
    };
    match saved {
        Ok(version) => Ok(version),
        Err(VersionError::Stale { based_on, current }) => {
            Err(ApplyError::Stale { based_on, current })
        }
        Err(VersionError::Invalid(errors)) => Err(ApplyError::Invalid(errors)),
        Err(e) => Err(ApplyError::Db(e)),
    }
}

/// Asks the proxy to take the newest version (`version`, just saved).
pub async fn reload(state: &AppState, version: i64) -> Outcome {
    match proxy::reload(&state.control).await {
        Ok(reply) => Outcome::Applied {
            version: reply.config_version,
            elapsed_ms: reply.elapsed_ms,
        },
        Err(ControlError::NotRunning(_)) => Outcome::NotRunning { version },
        Err(ControlError::Refused(reason)) => Outcome::Rejected {
            version,
            reason,
            in_force: proxy::status(&state.control)
                .await
                .ok()
                .map(|s| s.config_version),
        },
        Err(e) => Outcome::NoAnswer {
            version,
            error: e.to_string(),
        },
    }
}
