//! The live nodes of a fleet as the others peer with them (`fleet_peering`): read from the
//! node registry, so that a node that joins or leaves is followed without a config version.

use sqlx::Row;

use crate::nodes::HEARTBEAT_S;
use crate::versions::{rfc3339, Db, VersionError};

/// A node that is running and was seen within three heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FleetMember {
    pub name: String,
    /// Where its proxy listens, as it registered it (`address:port`).
    pub http_listen: String,
    /// Where it takes ICP queries; `None` with ICP disabled there.
    pub icp_listen: Option<String>,
    /// The `visible_name` it holds apart from the fleet's, if any (`canopy node set`).
    pub visible_name: Option<String>,
}

impl Db {
    /// Every live node, by name: running, and seen within three heartbeats of now. The
    /// times compare as text, since every node writes them in one RFC 3339 form.
    pub async fn fleet_members(&self) -> Result<Vec<FleetMember>, VersionError> {
        let stale = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * HEARTBEAT_S);
        let rows = sqlx::query(
            "SELECT n.name, n.http_listen, n.icp_listen, s.value AS visible_name
             FROM nodes n LEFT JOIN node_settings s ON s.node = n.name AND s.key = 'visible_name'
             WHERE n.state = 'running' AND n.last_seen >= $1 ORDER BY n.name",
        )
        .bind(rfc3339(stale))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(FleetMember {
                    name: row.try_get("name")?,
                    http_listen: row.try_get("http_listen")?,
                    icp_listen: row.try_get("icp_listen")?,
                    visible_name: row.try_get("visible_name")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::{NodeRecord, NodeState};
    use crate::versions::now_rfc3339;

    fn node(name: &str, state: NodeState, last_seen: String) -> NodeRecord {
        NodeRecord {
            name: name.to_owned(),
            http_listen: "127.0.0.2:3128".to_owned(),
            icp_listen: Some("127.0.0.2:3130".to_owned()),
            software: "0.1.0".to_owned(),
            config_version: 1,
            state,
            started_at: last_seen.clone(),
            last_seen,
        }
    }

    #[tokio::test]
    async fn only_running_nodes_seen_lately_are_members() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
        let long_ago = rfc3339(std::time::SystemTime::now() - std::time::Duration::from_secs(60));
        db.report_node(&node("b", NodeState::Running, now_rfc3339()))
            .await
            .unwrap();
        db.report_node(&node("a", NodeState::Running, now_rfc3339()))
            .await
            .unwrap();
        db.report_node(&node("gone", NodeState::Running, long_ago))
            .await
            .unwrap();
        db.report_node(&node("stopped", NodeState::Stopped, now_rfc3339()))
            .await
            .unwrap();
        db.set_node_setting("b", "visible_name", "cache-b")
            .await
            .unwrap();
        let members = db.fleet_members().await.unwrap();
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(members[0].visible_name, None);
        assert_eq!(members[1].visible_name.as_deref(), Some("cache-b"));
        assert_eq!(members[1].icp_listen.as_deref(), Some("127.0.0.2:3130"));
    }
}
