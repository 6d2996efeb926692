//! Peers and HTTP parents taken down by hand, kept in the database so that they stay down
//! across a restart of the proxy and across config versions that keep them, until an
//! administrator brings them up. The proxy is the one writer; the CLI and the console read.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::versions::{Db, VersionError};

/// Who took a peer down by hand, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    /// The peer's name, or an HTTP parent's `host:port`.
    pub name: String,
    pub reason: String,
    /// The console account, or the OS user of the `canopy` command.
    pub by: String,
    /// RFC 3339, UTC.
    pub at: String,
}

impl Db {
    /// Every peer down by hand, by name.
    pub async fn maintenance(&self) -> Result<Vec<Maintenance>, VersionError> {
        let rows = sqlx::query(
            "SELECT name, reason, taken_by, taken_at FROM peer_maintenance ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Maintenance {
                    name: row.try_get("name")?,
                    reason: row.try_get("reason")?,
                    by: row.try_get("taken_by")?,
                    at: row.try_get("taken_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(VersionError::from)
    }

    /// Records `down`, replacing an earlier record of the same peer.
    pub async fn take_down(&self, down: &Maintenance) -> Result<(), VersionError> {
        sqlx::query(
            "INSERT INTO peer_maintenance (name, reason, taken_by, taken_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET reason = $2, taken_by = $3, taken_at = $4",
        )
        .bind(&down.name)
        .bind(&down.reason)
        .bind(&down.by)
        .bind(&down.at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets the record of `name`; false when it had none.
    pub async fn bring_up(&self, name: &str) -> Result<bool, VersionError> {
        let done = sqlx::query("DELETE FROM peer_maintenance WHERE name = $1")
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(name: &str, reason: &str) -> Maintenance {
        Maintenance {
            name: name.to_owned(),
            reason: reason.to_owned(),
            by: "alice".to_owned(),
            at: "2026-11-29T03:00:00.000Z".to_owned(),
        }
    }

    #[tokio::test]
    async fn records_are_kept_replaced_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("canopy.db");
        let db = Db::open(&path).await.unwrap();
        db.take_down(&down("squid", "disk swap")).await.unwrap();
        db.take_down(&down("squid", "new disks")).await.unwrap();
        db.take_down(&down("127.0.0.1:3128", "moved"))
            .await
            .unwrap();
        let reopened = Db::open(&path).await.unwrap();
        assert_eq!(
            reopened.maintenance().await.unwrap(),
            vec![down("127.0.0.1:3128", "moved"), down("squid", "new disks")]
        );
        assert!(reopened.bring_up("squid").await.unwrap());
        assert!(!reopened.bring_up("squid").await.unwrap());
        assert_eq!(reopened.maintenance().await.unwrap().len(), 1);
    }
}
