//! The proxies a database serves: each registers itself (name, addresses, the version in
//! force, when it was last seen) and records what it did with each config version it tried,
//! so that the console of any node of a fleet shows every node.

use serde::Serialize;
use sqlx::Row;

use crate::config::Config;
use crate::database::VERSIONS_CHANNEL;
use crate::versions::{now_rfc3339, version_from_row, ConfigVersion, Db, VersionError};

/// The settings a node may hold apart from its fleet's versions: where it listens and the
/// name it shows; every other setting is the fleet's.
pub const PER_NODE: &[&str] = &[
    "bind_address",
    "http_port",
    "icp_port",
    "manager_listen",
    "visible_name",
];

/// The file in a node's data dir that holds the version it last applied (JSON), read by its
/// console too for where to listen while the database does not answer.
pub const LAST_APPLIED_FILE: &str = "last-applied-version.json";

/// A running node writes `last_seen` this often; one not seen for three times as long is
/// shown as unreachable.
pub const HEARTBEAT_S: u64 = 5;

/// One node as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRecord {
    pub name: String,
    pub http_listen: String,
    pub icp_listen: Option<String>,
    /// Canopy's own version.
    pub software: String,
    /// The config version in force.
    pub config_version: i64,
    pub state: NodeState,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub last_seen: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Running,
    /// Shut down cleanly.
    Stopped,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Running => "running",
            NodeState::Stopped => "stopped",
        }
    }
}

/// What one node did with one config version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Outcome {
    Applied,
    /// It could not, and kept the version it had; why.
    Rejected(String),
}

/// A node's outcome for a version, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeOutcome {
    pub version: i64,
    pub outcome: Outcome,
    pub at: String,
}

/// A node with its outcome for the newest version it tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    pub node: NodeRecord,
    pub latest: Option<NodeOutcome>,
    /// Why the node could not apply its own settings (it kept the old), when it could not.
    pub own_settings_refused: Option<String>,
}

/// The machine's host name, the name a node has unless it is given one (`--node`).
pub fn default_node_name() -> String {
    crate::config::default_visible_name()
}

impl Db {
    /// Registers `node`, or writes its new state over its row: at start, as a heartbeat,
    /// after each version it applies, and when it stops.
    pub async fn report_node(&self, node: &NodeRecord) -> Result<(), VersionError> {
        sqlx::query(
            "INSERT INTO nodes (name, http_listen, icp_listen, software, config_version, state,
                                started_at, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (name) DO UPDATE SET http_listen = excluded.http_listen,
                icp_listen = excluded.icp_listen, software = excluded.software,
                config_version = excluded.config_version, state = excluded.state,
                started_at = excluded.started_at, last_seen = excluded.last_seen",
        )
        .bind(&node.name)
        .bind(&node.http_listen)
        .bind(&node.icp_listen)
        .bind(&node.software)
        .bind(node.config_version)
        .bind(node.state.as_str())
        .bind(&node.started_at)
        .bind(&node.last_seen)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records what `node` (registered) did with `version`.
    pub async fn record_outcome(
        &self,
        node: &str,
        version: i64,
        outcome: &Outcome,
        at: &str,
    ) -> Result<(), VersionError> {
        let (word, reason) = match outcome {
            Outcome::Applied => ("applied", None),
            Outcome::Rejected(why) => ("rejected", Some(why.as_str())),
        };
        sqlx::query(
            "INSERT INTO node_versions (node, version, outcome, reason, at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (node, version) DO UPDATE SET outcome = excluded.outcome,
                reason = excluded.reason, at = excluded.at",
        )
        .bind(node)
        .bind(version)
        .bind(word)
        .bind(reason)
        .bind(at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Holds `key` = `value` on `node` apart from the fleet's versions; the node applies it
    /// over the version in force at once (see [`Db::set_node_settings`]).
    pub async fn set_node_setting(
        &self,
        node: &str,
        key: &str,
        value: &str,
    ) -> Result<(), VersionError> {
        if !PER_NODE.contains(&key) {
            return Err(VersionError::NotPerNode(key.to_owned()));
        }
        Config::default().set(key, value)?;
        self.set_node_settings(node, &[(key, Some(value))]).await
    }

    /// Sets (`Some`) or clears (`None`: the fleet's value again) settings `node` holds apart,
    /// all at once, and tells the node (PostgreSQL's `NOTIFY`, in the same transaction) so
    /// that it applies them over the version in force without waiting for the next one.
    /// What the node last said of its own settings is cleared until it tries these.
    pub async fn set_node_settings(
        &self,
        node: &str,
        changes: &[(&str, Option<&str>)],
    ) -> Result<(), VersionError> {
        let mut tx = self.pool().begin().await?;
        for (key, value) in changes {
            if !PER_NODE.contains(key) {
                return Err(VersionError::NotPerNode((*key).to_owned()));
            }
            let query = match value {
                Some(value) => sqlx::query(
                    "INSERT INTO node_settings (node, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT (node, key) DO UPDATE SET value = excluded.value",
                )
                .bind(node)
                .bind(*key)
                .bind(*value),
                None => sqlx::query("DELETE FROM node_settings WHERE node = $1 AND key = $2")
                    .bind(node)
                    .bind(*key),
            };
            query.execute(&mut *tx).await?;
        }
        sqlx::query("UPDATE nodes SET own_settings_refused = NULL WHERE name = $1")
            .bind(node)
            .execute(&mut *tx)
            .await?;
        if self.url().is_shared() {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(VERSIONS_CHANNEL)
                .bind(format!("settings of {node}"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records whether `node` applied its own settings: `None` it did, `Some(why)` it kept
    /// the old ones.
    pub async fn record_own_settings(
        &self,
        node: &str,
        refused: Option<&str>,
    ) -> Result<(), VersionError> {
        sqlx::query("UPDATE nodes SET own_settings_refused = $2 WHERE name = $1")
            .bind(node)
            .bind(refused)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The settings `node` holds apart, by key.
    pub async fn node_settings(&self, node: &str) -> Result<Vec<(String, String)>, VersionError> {
        let rows = sqlx::query("SELECT key, value FROM node_settings WHERE node = $1 ORDER BY key")
            .bind(node)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("key")?, row.try_get("value")?)))
            .collect()
    }

    /// `version` as `node` runs it: its own settings laid over the fleet's.
    pub async fn for_node(
        &self,
        node: &str,
        mut version: ConfigVersion,
    ) -> Result<ConfigVersion, VersionError> {
        let own = self.node_settings(node).await?;
        version
            .config
            .set_all(own.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        Ok(version)
    }

    /// The newest version `node` may apply: every node's, or one held for it as the canary.
    pub async fn latest_for(&self, node: &str) -> Result<ConfigVersion, VersionError> {
        let row = sqlx::query(
            "SELECT * FROM config_versions WHERE state != 'discarded'
             AND (canary IS NULL OR canary = $1) ORDER BY id DESC LIMIT 1",
        )
        .bind(node)
        .fetch_one(self.pool())
        .await?;
        version_from_row(&row)
    }

    /// Makes `node` the canary: every version saved from now on is held for it alone, until
    /// [`Db::roll_out`].
    pub async fn start_canary(&self, node: &str) -> Result<(), VersionError> {
        sqlx::query(
            "INSERT INTO canary (id, node, since) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET node = excluded.node, since = excluded.since",
        )
        .bind(node)
        .bind(now_rfc3339())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The canary node, and since when (RFC 3339), while one runs.
    pub async fn canary(&self) -> Result<Option<(String, String)>, VersionError> {
        let row = sqlx::query("SELECT node, since FROM canary")
            .fetch_optional(self.pool())
            .await?;
        Ok(row
            .map(|row| Ok::<_, sqlx::Error>((row.try_get("node")?, row.try_get("since")?)))
            .transpose()?)
    }

    /// Ends the canary: the versions held for it become every node's (and every node is
    /// told). Returns how many were held.
    pub async fn roll_out(&self) -> Result<u64, VersionError> {
        let mut tx = self.pool().begin().await?;
        let released =
            sqlx::query("UPDATE config_versions SET canary = NULL WHERE canary IS NOT NULL")
                .execute(&mut *tx)
                .await?
                .rows_affected();
        sqlx::query("DELETE FROM canary").execute(&mut *tx).await?;
        if self.url().is_shared() {
            sqlx::query("SELECT pg_notify($1, 'rolled out')")
                .bind(VERSIONS_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    /// Every node by name, each with its outcome for the newest version it tried.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, VersionError> {
        let rows = sqlx::query(
            "SELECT n.name, n.http_listen, n.icp_listen, n.software, n.config_version, n.state,
                    n.started_at, n.last_seen, n.own_settings_refused,
                    v.version, v.outcome, v.reason, v.at
             FROM nodes n LEFT JOIN node_versions v ON v.node = n.name AND v.version =
                (SELECT max(version) FROM node_versions WHERE node = n.name)
             ORDER BY n.name",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(node_from_row).collect()
    }

    /// The version `node` last applied; for a node that never recorded one (a database
    /// from before nodes were recorded), the version last applied by any.
    pub async fn last_applied_on(&self, node: &str) -> Result<Option<ConfigVersion>, VersionError> {
        let row = sqlx::query(
            "SELECT c.* FROM config_versions c JOIN node_versions v ON v.version = c.id
             WHERE v.node = $1 AND v.outcome = 'applied'
             ORDER BY v.at DESC, c.id DESC LIMIT 1",
        )
        .bind(node)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => version_from_row(&row).map(Some),
            None => self.last_applied().await,
        }
    }
}

fn node_from_row(row: &sqlx::any::AnyRow) -> Result<NodeView, VersionError> {
    let state = match row.try_get::<String, _>("state")?.as_str() {
        "stopped" => NodeState::Stopped,
        _ => NodeState::Running,
    };
    let latest = match row.try_get::<Option<i64>, _>("version")? {
        Some(version) => {
            let outcome = match row.try_get::<Option<String>, _>("reason")? {
                Some(reason) if row.try_get::<String, _>("outcome")? == "rejected" => {
                    Outcome::Rejected(reason)
                }
                _ => Outcome::Applied,
            };
            Some(NodeOutcome {
                version,
                outcome,
                at: row.try_get("at")?,
            })
        }
        None => None,
    };
    Ok(NodeView {
        node: NodeRecord {
            name: row.try_get("name")?,
            http_listen: row.try_get("http_listen")?,
            icp_listen: row.try_get("icp_listen")?,
            software: row.try_get("software")?,
            config_version: row.try_get("config_version")?,
            state,
            started_at: row.try_get("started_at")?,
            last_seen: row.try_get("last_seen")?,
        },
        latest,
        own_settings_refused: row.try_get("own_settings_refused")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn node(name: &str, version: i64) -> NodeRecord {
        NodeRecord {
            name: name.to_owned(),
            http_listen: "127.0.0.1:3128".to_owned(),
            icp_listen: None,
            software: "0.1.0".to_owned(),
            config_version: version,
            state: NodeState::Running,
            started_at: "2026-11-29T06:00:00.000Z".to_owned(),
            last_seen: "2026-11-29T06:00:05.000Z".to_owned(),
        }
    }

    #[tokio::test]
    async fn each_node_keeps_its_own_outcome_and_last_applied_version() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
        let mut config = Config::default();
        config.set("http_port", "3129").unwrap();
        let v2 = db.save(&config, "t", "a", None).await.unwrap();
        db.report_node(&node("a", 1)).await.unwrap();
        db.report_node(&node("b", 1)).await.unwrap();
        let at = "2026-11-29T06:00:01.000Z";
        db.record_outcome("a", 1, &Outcome::Applied, at)
            .await
            .unwrap();
        db.record_outcome("b", 1, &Outcome::Applied, at)
            .await
            .unwrap();
        let later = "2026-11-29T06:00:02.000Z";
        db.record_outcome("a", v2, &Outcome::Applied, later)
            .await
            .unwrap();
        let taken = Outcome::Rejected("port 3129 taken".to_owned());
        db.record_outcome("b", v2, &taken, later).await.unwrap();
        db.report_node(&node("a", v2)).await.unwrap();
        let nodes = db.nodes().await.unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].node.config_version, v2);
        assert_eq!(nodes[1].latest.as_ref().unwrap().outcome, taken);
        assert_eq!(db.last_applied_on("a").await.unwrap().unwrap().id, v2);
        assert_eq!(db.last_applied_on("b").await.unwrap().unwrap().id, 1);
    }

    #[tokio::test]
    async fn a_canarys_versions_reach_the_other_nodes_once_rolled_out() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
        db.start_canary("a").await.unwrap();
        assert_eq!(db.canary().await.unwrap().unwrap().0, "a");
        let mut config = Config::default();
        config.set("http_port", "3129").unwrap();
        let v2 = db.save(&config, "t", "held", None).await.unwrap();
        assert_eq!(db.latest_for("a").await.unwrap().id, v2);
        assert_eq!(db.latest_for("b").await.unwrap().id, 1);
        assert_eq!(db.in_force().await.unwrap().id, v2, "edits go on from it");
        assert_eq!(db.roll_out().await.unwrap(), 1);
        assert!(db.canary().await.unwrap().is_none());
        assert_eq!(db.latest_for("b").await.unwrap().id, v2);
        let v3 = db.save(&config, "t", "every node's", None).await.unwrap();
        assert_eq!(db.latest_for("b").await.unwrap().id, v3);
    }

    #[tokio::test]
    async fn a_node_runs_its_own_addresses_over_the_fleets_version() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
        db.set_node_setting("b", "bind_address", "127.0.0.2")
            .await
            .unwrap();
        assert!(matches!(
            db.set_node_setting("b", "cache_mem", "1G").await,
            Err(VersionError::NotPerNode(key)) if key == "cache_mem"
        ));
        assert!(db.set_node_setting("b", "http_port", "none").await.is_err());
        let fleet = db.latest().await.unwrap();
        let on_b = db.for_node("b", fleet.clone()).await.unwrap();
        assert_eq!(on_b.config.get("bind_address").unwrap(), "127.0.0.2");
        let on_a = db.for_node("a", fleet.clone()).await.unwrap();
        assert_eq!(on_a.config, fleet.config);
        db.set_node_settings("b", &[("bind_address", None), ("http_port", Some("3200"))])
            .await
            .unwrap();
        let own = db.node_settings("b").await.unwrap();
        assert_eq!(own, [("http_port".to_owned(), "3200".to_owned())]);
    }
}
