//! Config versions in the database: the single source of truth for configuration, shared by the
//! proxy, the manager and the `canopy` command.

use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::config::{Config, ConfigErrors};
pub use crate::database::Db;
use crate::database::{DatabaseError, DatabaseUrl, VERSIONS_CHANNEL};

/// Where a config version stands with the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    /// Saved, not yet tried by a running proxy.
    Saved,
    Applied,
    Rejected,
    /// Rejected, then set aside by the admin: kept in the history, never applied again.
    Discarded,
}

impl VersionState {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Saved => "saved",
            VersionState::Applied => "applied",
            VersionState::Rejected => "rejected",
            VersionState::Discarded => "discarded",
        }
    }
}

impl FromStr for VersionState {
    type Err = sqlx::Error;
    fn from_str(s: &str) -> Result<Self, sqlx::Error> {
        match s {
            "saved" => Ok(VersionState::Saved),
            "applied" => Ok(VersionState::Applied),
            "rejected" => Ok(VersionState::Rejected),
            "discarded" => Ok(VersionState::Discarded),
            other => Err(sqlx::Error::Decode(
                format!("unknown config version state {other:?}").into(),
            )),
        }
    }
}

/// One saved configuration, with who made it and what the proxy did with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigVersion {
    pub id: i64,
    pub created_at: String,
    pub author: String,
    pub summary: String,
    pub config: Config,
    pub state: VersionState,
    pub state_reason: Option<String>,
    pub state_at: Option<String>,
    /// The node this version is held for while a canary runs; `None`: every node's.
    #[serde(default)]
    pub canary: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Database(#[from] DatabaseError),
    #[error("invalid config: {0}")]
    Invalid(#[from] ConfigErrors),
    #[error("config version {based_on} is out of date: version {current} was saved meanwhile")]
    Stale { based_on: i64, current: i64 },
    #[error("config version {0} holds a config this Canopy cannot read: {1}")]
    Unreadable(i64, String),
    #[error("no config version {0}")]
    NotFound(i64),
    #[error("{0} is the fleet's setting; a node holds apart only its addresses, ports and name")]
    NotPerNode(String),
}

/// The id of the version in force, as SQL (see [`Db::in_force`]); one expression, so a
/// save can check it in the same statement as its insert.
macro_rules! in_force_id {
    () => {
        "coalesce(
           (SELECT max(id) FROM config_versions WHERE state IN ('saved', 'applied') AND id >
              (SELECT coalesce(max(id), 0) FROM config_versions
                 WHERE state IN ('rejected', 'discarded'))),
           (SELECT id FROM config_versions WHERE state = 'applied'
              ORDER BY state_at DESC, id DESC LIMIT 1),
           (SELECT max(id) FROM config_versions))"
    };
}

/// The current time as RFC 3339 in UTC, to the millisecond.
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// A moment as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(at: std::time::SystemTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from(at)
        .format(&format)
        .unwrap_or_default()
}

impl Db {
    /// Opens (creating when missing) the SQLite database at `path`: see [`Db::connect`].
    pub async fn open(path: &Path) -> Result<Db, VersionError> {
        Db::connect(&DatabaseUrl::Sqlite(path.to_owned())).await
    }

    /// Connects, brings the schema up to date (see [`Db::connect_schema`]), and saves the
    /// default config as version 1 when there is none.
    pub async fn connect(url: &DatabaseUrl) -> Result<Db, VersionError> {
        let db = Db::connect_schema(url).await?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM config_versions")
            .fetch_one(db.pool())
            .await?;
        if count == 0 {
            db.save(&Config::default(), "canopy", "default configuration", None)
                .await?;
        }
        Ok(db)
    }

    /// Saves `config` as a new version. With `based_on`, refuses unless it is still the
    /// version in force (see [`Db::in_force`]), so no one's change is overwritten.
    pub async fn save(
        &self,
        config: &Config,
        author: &str,
        summary: &str,
        based_on: Option<i64>,
    ) -> Result<i64, VersionError> {
        config.validate()?;
        let json = serde_json::to_string(config)
            .map_err(|e| VersionError::Unreadable(0, e.to_string()))?;
        let mut tx = self.pool().begin().await?;
        if self.url().is_shared() {
            // Other writers wait, so the check below sees every version saved before.
            sqlx::query("LOCK TABLE config_versions IN EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
        }
        // One statement, so the check and the insert cannot be split by another writer.
        let id: Option<i64> = sqlx::query_scalar(concat!(
            "INSERT INTO config_versions (created_at, author, summary, config, canary)
             SELECT $1, $2, $3, $4, (SELECT node FROM canary)
             WHERE $5 IS NULL OR $5 = ",
            in_force_id!(),
            " RETURNING id"
        ))
        .bind(now_rfc3339())
        .bind(author)
        .bind(summary)
        .bind(json)
        .bind(based_on)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            drop(tx);
            let current = self.in_force().await?.id;
            return Err(VersionError::Stale {
                based_on: based_on.unwrap_or_default(),
                current,
            });
        };
        if self.url().is_shared() {
            // Sent when the transaction commits: a node told of it can read the version.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(VERSIONS_CHANNEL)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Saves `config` with a summary of what changed from the version in force.
    pub async fn save_change(
        &self,
        config: &Config,
        author: &str,
        based_on: Option<i64>,
    ) -> Result<i64, VersionError> {
        self.save_summarised(config, author, None, based_on).await
    }

    /// As [`Db::save_change`], the summary led by what was done (`restored version 4`).
    pub async fn save_labelled(
        &self,
        config: &Config,
        author: &str,
        what: &str,
        based_on: Option<i64>,
    ) -> Result<i64, VersionError> {
        self.save_summarised(config, author, Some(what), based_on)
            .await
    }

    async fn save_summarised(
        &self,
        config: &Config,
        author: &str,
        what: Option<&str>,
        based_on: Option<i64>,
    ) -> Result<i64, VersionError> {
        let base = self.in_force().await?;
        let changes = match config.diff(&base.config) {
            changes if changes.is_empty() => "no change".to_owned(),
            changes => changes.join("; "),
        };
        let summary = match what {
            Some(what) => format!("{what}: {changes}"),
            None => changes,
        };
        self.save(config, author, &summary, based_on).await
    }

    pub async fn latest(&self) -> Result<ConfigVersion, VersionError> {
        let row = sqlx::query(
            "SELECT * FROM config_versions WHERE state != 'discarded' ORDER BY id DESC LIMIT 1",
        )
        .fetch_one(self.pool())
        .await?;
        version_from_row(&row)
    }

    pub async fn get(&self, id: i64) -> Result<ConfigVersion, VersionError> {
        let row = sqlx::query("SELECT * FROM config_versions WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(VersionError::NotFound(id))?;
        version_from_row(&row)
    }

    /// The version last in force: the one most recently marked applied.
    pub async fn last_applied(&self) -> Result<Option<ConfigVersion>, VersionError> {
        let row = sqlx::query(
            "SELECT * FROM config_versions WHERE state = 'applied'
             ORDER BY state_at DESC, id DESC LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    /// The version edits start from: one saved after the newest rejection (still to be
    /// applied), else the one last in force, else (nothing ever applied) the newest. A
    /// rejected version so never carries over into later edits.
    pub async fn in_force(&self) -> Result<ConfigVersion, VersionError> {
        let row = sqlx::query(concat!(
            "SELECT * FROM config_versions WHERE id = ",
            in_force_id!()
        ))
        .fetch_one(self.pool())
        .await?;
        version_from_row(&row)
    }

    /// The newest rejected version newer than `id`, to show beside the version in force.
    pub async fn rejected_after(&self, id: i64) -> Result<Option<ConfigVersion>, VersionError> {
        let row = sqlx::query(
            "SELECT * FROM config_versions WHERE state = 'rejected' AND id > $1
             ORDER BY id DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    /// Sets rejected version `id` aside (see [`VersionState::Discarded`]); false when it is
    /// not a rejected version.
    pub async fn discard(&self, id: i64) -> Result<bool, VersionError> {
        let result = sqlx::query(
            "UPDATE config_versions SET state = 'discarded', state_at = $1
             WHERE id = $2 AND state = 'rejected'",
        )
        .bind(now_rfc3339())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// The newest versions first, at most `limit`.
    pub async fn list(&self, limit: i64) -> Result<Vec<ConfigVersion>, VersionError> {
        let rows = sqlx::query("SELECT * FROM config_versions ORDER BY id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(version_from_row).collect()
    }

    pub async fn mark(
        &self,
        id: i64,
        state: VersionState,
        reason: Option<&str>,
    ) -> Result<(), VersionError> {
        // A version one node of a fleet applied stays applied when another rejects it (each
        // node's own outcome is in `node_versions`).
        sqlx::query(
            "UPDATE config_versions SET state = $1, state_reason = $2, state_at = $3
             WHERE id = $4 AND NOT (state = 'applied' AND $1 = 'rejected')",
        )
        .bind(state.as_str())
        .bind(reason)
        .bind(now_rfc3339())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

pub(crate) fn version_from_row(row: &sqlx::any::AnyRow) -> Result<ConfigVersion, VersionError> {
    let id: i64 = row.try_get("id")?;
    let text: String = row.try_get("config")?;
    let config: Config =
        serde_json::from_str(&text).map_err(|e| VersionError::Unreadable(id, e.to_string()))?;
    let state: String = row.try_get("state")?;
    Ok(ConfigVersion {
        id,
        created_at: row.try_get("created_at")?,
        author: row.try_get("author")?,
        summary: row.try_get("summary")?,
        config,
        state: state.parse()?,
        state_reason: row.try_get("state_reason")?,
        state_at: row.try_get("state_at")?,
        canary: row.try_get("canary")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_database_holds_the_defaults_as_version_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
        let v = db.latest().await.unwrap();
        assert_eq!(v.id, 1);
        assert_eq!(v.config, Config::default());
        assert_eq!(v.state, VersionState::Saved);
    }

    #[tokio::test]
    async fn a_change_from_an_old_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
        let mut config = Config::default();
        config.set("http_port", "3129").unwrap();
        let v2 = db.save_change(&config, "alice", Some(1)).await.unwrap();
        assert_eq!(v2, 2);
        assert_eq!(db.get(2).await.unwrap().summary, "http_port: 3128 → 3129");
        config.set("http_port", "3130").unwrap();
        let err = db.save_change(&config, "bob", Some(1)).await.unwrap_err();
        assert!(
            matches!(
                err,
                VersionError::Stale {
                    based_on: 1,
                    current: 2
                }
            ),
            "{err}"
        );
        assert_eq!(db.latest().await.unwrap().id, 2);
    }

    #[tokio::test]
    async fn edits_start_from_the_version_in_force_not_a_rejected_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
        let mut config = Config::default();
        config.set("http_port", "3129").unwrap();
        let v2 = db.save(&config, "t", "a", None).await.unwrap();
        assert_eq!(
            db.in_force().await.unwrap().id,
            v2,
            "nothing applied: newest"
        );
        db.mark(v2, VersionState::Applied, None).await.unwrap();
        config.set("http_port", "3130").unwrap();
        let v3 = db.save(&config, "t", "b", None).await.unwrap();
        db.mark(v3, VersionState::Rejected, Some("port taken"))
            .await
            .unwrap();
        assert_eq!(db.in_force().await.unwrap().id, v2);
        let rejected = db.rejected_after(v2).await.unwrap().unwrap();
        assert_eq!(rejected.id, v3);
        assert_eq!(rejected.state_reason.as_deref(), Some("port taken"));
        let v4 = db.save(&Config::default(), "t", "c", None).await.unwrap();
        assert_eq!(db.in_force().await.unwrap().id, v4, "a pending edit");
        assert!(db.rejected_after(v4).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_discarded_version_stays_listed_but_is_never_run_or_offered() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
        db.mark(1, VersionState::Applied, None).await.unwrap();
        let mut config = Config::default();
        config.set("http_port", "3130").unwrap();
        let v2 = db.save(&config, "t", "a", None).await.unwrap();
        assert!(!db.discard(v2).await.unwrap(), "only a rejected version");
        db.mark(v2, VersionState::Rejected, Some("port taken"))
            .await
            .unwrap();
        assert!(db.discard(v2).await.unwrap());
        let discarded = db.get(v2).await.unwrap();
        assert_eq!(discarded.state, VersionState::Discarded);
        assert_eq!(discarded.state_reason.as_deref(), Some("port taken"));
        assert_eq!(db.latest().await.unwrap().id, 1, "the proxy runs version 1");
        assert_eq!(db.in_force().await.unwrap().id, 1);
        assert!(db.rejected_after(1).await.unwrap().is_none());
        assert_eq!(db.list(10).await.unwrap()[0].id, v2, "still in the history");
        let v3 = db.save(&config, "t", "b", Some(1)).await.unwrap();
        assert_eq!(db.in_force().await.unwrap().id, v3);
        assert_eq!(db.latest().await.unwrap().id, v3);
    }
}
