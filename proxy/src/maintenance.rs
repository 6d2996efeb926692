//! Peers taken down by hand (`canopy peer down`, the console's Take down): the one place
//! that finds a peer or an HTTP parent by name in the runtime in force, keeps the record in
//! the database and marks its health. At start and after each config version applied the
//! records are laid over the new runtime; those of peers the version no longer has are
//! dropped, so a peer added again later under the same name starts up.

use std::fmt;
use std::sync::Arc;

use crate::fleet;
use crate::runtime::Runtime;
use crate::stats::{PeerStats, Stats};
use canopy_config::maintenance::Maintenance;
use canopy_config::versions::{Db, VersionError};

/// A peer of the runtime as an administrator names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPeer {
    pub name: String,
    /// "HTTP parent", "parent" (ICP) or "sibling".
    pub kind: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("no parent named {name:?}, nor a sibling; {}", KnownPeers(known))]
    Unknown { name: String, known: Vec<KnownPeer> },
    #[error("{name}: the record could not be kept, so nothing was changed: {source}")]
    Db {
        name: String,
        #[source]
        source: VersionError,
    },
}

struct KnownPeers<'a>(&'a [KnownPeer]);

impl fmt::Display for KnownPeers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no peers or parents are configured");
        }
        f.write_str("the peers are: ")?;
        for (i, peer) in self.0.iter().enumerate() {
            let comma = if i == 0 { "" } else { ", " };
            write!(f, "{comma}{} ({})", peer.name, peer.kind)?;
        }
        Ok(())
    }
}

/// Every peer and HTTP parent of `runtime`, HTTP parents first.
pub fn known(runtime: &Runtime) -> Vec<KnownPeer> {
    let parents = runtime.parents.iter().map(|p| KnownPeer {
        name: p.name.clone(),
        kind: "HTTP parent",
    });
    let peers = runtime.peers.iter().map(|p| KnownPeer {
        name: p.config.name.clone(),
        kind: p.config.kind.as_str(),
    });
    parents.chain(peers).collect()
}

/// The counters (and health) of the peer or HTTP parent called `name` in `runtime`.
fn find<'a>(runtime: &'a Runtime, name: &str) -> Option<&'a Arc<PeerStats>> {
    let fleet = runtime.fleet_home.iter().flat_map(|fleet| fleet.others());
    let parent = runtime.parents.iter().chain(fleet).find(|p| p.name == name);
    parent.map(|p| &p.stats).or_else(|| {
        runtime
            .peers
            .iter()
            .find(|p| p.config.name == name)
            .map(|p| &p.stats)
    })
}

/// Takes `down.name` down by hand: recorded first, so what the proxy does is what a
/// restart will do.
pub async fn take_down(
    runtime: &Runtime,
    db: &Db,
    down: &Maintenance,
) -> Result<Arc<PeerStats>, MaintenanceError> {
    let stats = found(runtime, &down.name)?;
    db.take_down(down)
        .await
        .map_err(|source| MaintenanceError::Db {
            name: down.name.clone(),
            source,
        })?;
    stats.health.take_down(down);
    tracing::warn!("{} taken down by {}: {}", down.name, down.by, down.reason);
    Ok(stats)
}

/// Brings `name` up, back to the health checks.
pub async fn bring_up(
    runtime: &Runtime,
    db: &Db,
    name: &str,
    by: &str,
) -> Result<Arc<PeerStats>, MaintenanceError> {
    let stats = found(runtime, name)?;
    db.bring_up(name)
        .await
        .map_err(|source| MaintenanceError::Db {
            name: name.to_owned(),
            source,
        })?;
    stats.health.bring_up();
    tracing::info!("{name} brought up by {by}");
    Ok(stats)
}

fn found(runtime: &Runtime, name: &str) -> Result<Arc<PeerStats>, MaintenanceError> {
    find(runtime, name)
        .cloned()
        .ok_or_else(|| MaintenanceError::Unknown {
            name: name.to_owned(),
            known: known(runtime),
        })
}

/// Marks down the peers of `runtime` that `records` say are, before it serves; returns the
/// records of peers it does not have.
pub fn lay_over(runtime: &Runtime, records: Vec<Maintenance>) -> Vec<Maintenance> {
    let mut gone = Vec::new();
    for record in records {
        match find(runtime, &record.name) {
            Some(stats) if !stats.health.is_down_by_hand() => stats.health.take_down(&record),
            Some(_) => {}
            // Every node has other fleet peers (never itself), and they come and go with
            // the registry: a record of one is kept for when it is a peer here.
            None if fleet::is_peer_name(&record.name) => {}
            None => gone.push(record),
        }
    }
    gone
}

/// Makes the peers of `runtime` down by hand those `records` name, and only those: once the
/// database is back after an offline start, its records are the truth (an administrator
/// may have brought a peer up meanwhile). Returns the records of peers it does not have.
pub fn resync(runtime: &Runtime, records: Vec<Maintenance>) -> Vec<Maintenance> {
    let parents = runtime.parents.iter().map(|p| (&p.name, &p.stats));
    let peers = runtime.peers.iter().map(|p| (&p.config.name, &p.stats));
    for (name, stats) in parents.chain(peers) {
        if stats.health.is_down_by_hand() && !records.iter().any(|r| &r.name == name) {
            stats.health.bring_up();
        }
    }
    lay_over(runtime, records)
}

/// Forgets the records of peers the config version in force no longer has (their counters,
/// kept by name, are brought up too). A failure is logged: the version is in force already.
pub async fn drop_gone(db: &Db, stats: &Stats, gone: &[Maintenance]) {
    for record in gone {
        if let Some(counters) = stats.existing_peer(&record.name) {
            counters.health.bring_up();
        }
        match db.bring_up(&record.name).await {
            Ok(_) => tracing::info!(
                "{} is no longer configured: taken down by {} ({}), its record is dropped",
                record.name,
                record.by,
                record.reason
            ),
            Err(e) => tracing::error!(
                "{} is no longer configured, but its record could not be dropped: {e}",
                record.name
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_config::config::{Config, Peer, PeerKind};

    fn runtime() -> Runtime {
        let mut config = Config {
            parents: "10.0.0.1:3128;".parse().unwrap(),
            ..Config::default()
        };
        config.peers.push(Peer {
            name: "squid".into(),
            host: "10.0.0.2".into(),
            kind: PeerKind::Parent,
            ..Peer::default()
        });
        config.peers.push(Peer {
            name: "sib".into(),
            host: "10.0.0.3".into(),
            kind: PeerKind::Sibling,
            ..Peer::default()
        });
        Runtime::for_tests(config)
    }

    fn record(name: &str) -> Maintenance {
        Maintenance {
            name: name.into(),
            reason: "disk swap".into(),
            by: "alice".into(),
            at: "2026-11-29T03:00:00.000Z".into(),
        }
    }

    #[test]
    fn an_unknown_name_lists_every_peer_and_parent() {
        let err = found(&runtime(), "nowhere").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no parent named \"nowhere\", nor a sibling; the peers are: \
             10.0.0.1:3128 (HTTP parent), squid (parent), sib (sibling)"
        );
    }

    #[test]
    fn records_mark_the_runtime_s_peers_and_return_the_others() {
        let runtime = runtime();
        let gone = lay_over(
            &runtime,
            vec![
                record("sib"),
                record("10.0.0.1:3128"),
                record("old"),
                record("fleet:node2"),
            ],
        );
        assert_eq!(gone, vec![record("old")], "a fleet node's record is kept");
        assert!(runtime.peers[1].stats.health.is_down_by_hand());
        assert!(runtime.parents[0].stats.health.is_down_by_hand());
        assert!(!runtime.peers[0].stats.health.is_down_by_hand());
    }

    #[test]
    fn the_database_s_records_are_the_truth_once_it_is_back() {
        let runtime = runtime();
        lay_over(&runtime, vec![record("sib"), record("squid")]);
        let gone = resync(&runtime, vec![record("squid"), record("10.0.0.1:3128")]);
        assert!(gone.is_empty());
        assert!(
            !runtime.peers[1].stats.health.is_down_by_hand(),
            "brought up meanwhile"
        );
        assert!(runtime.peers[0].stats.health.is_down_by_hand());
        assert!(runtime.parents[0].stats.health.is_down_by_hand());
    }
}
