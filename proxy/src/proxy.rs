//! The orchestrator: starts the proxy on a config version, swaps in a new runtime on
//! `reload`, drains on the way out, and answers what the control socket asks of it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::cache::disk_tier::{DiskState, DiskTier};
use crate::cache::listing;
use crate::cache::partial::PartialStore;
use crate::cache::store::Store;
use crate::control::{ControlHandler, PeerChange};
use crate::digest;
use crate::digest::builder::OwnDigest;
use crate::fleet::Fleet;
use crate::hierarchy::peers;
use crate::htcp::{
    self,
    socket::{HtcpBindError, HtcpSocket},
};
use crate::http::listener;
use crate::icp::serve;
use crate::icp::socket::{BindError, IcpSettings, IcpSocket};
use crate::maintenance::{self, MaintenanceError};
use crate::node::{self, LastApplied, Node};
use crate::runtime::{Runtime, RuntimeError, Shared};
use crate::stats::{ratio, Stats};
use canopy_config::config::{Config, FleetPeering};
use canopy_config::control::{
    CacheListReply, RejectedVersion, ReloadReply, ReopenReply, StatusReply,
};
use canopy_config::maintenance::Maintenance;
use canopy_config::nodes::{NodeRecord, NodeState, Outcome, HEARTBEAT_S};
use canopy_config::stats::{DiskSnapshot, Failure, PeerSnapshot, StatsSnapshot, StoreState};
use canopy_config::versions::{
    now_rfc3339, rfc3339, ConfigVersion, Db, VersionError, VersionState,
};

/// The disk tier `config` asks for, in the data directory unless `cache_dir` is absolute.
/// One that cannot be opened (a missing or read-only directory, a full disk) leaves the
/// proxy serving from memory, with the reason logged and shown in `stats`.
async fn open_disk_tier(config: &Config, data_dir: &Path) -> DiskState {
    if !config.disk_cache_on() {
        tracing::info!("disk cache off (cache_dir or cache_dir_size is empty)");
        return DiskState::Off;
    }
    let dir = data_dir.join(config.cache_dir.trim());
    let size = config.cache_dir_size.0;
    let opened = tokio::task::spawn_blocking(move || DiskTier::open(&dir, size)).await;
    let reason = match opened {
        Ok(Ok(tier)) => return DiskState::Open(tier),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::error!("disk cache not opened, serving from memory only: {reason}");
    DiskState::Closed(reason)
}

fn disk_snapshot(tier: &DiskTier, requests: u64) -> DiskSnapshot {
    let t = tier.stats();
    let s = t.store;
    let last_fault = tier.last_fault();
    let recent = |at: &SystemTime| {
        at.elapsed()
            .map_or(true, |ago| ago.as_secs() < StoreState::FAULTED_FOR_S)
    };
    let state = match &last_fault {
        Some((at, _)) if recent(at) => StoreState::Faulted,
        _ => StoreState::Ok,
    };
    DiskSnapshot {
        closed: None,
        objects: s.objects,
        bytes: s.bytes,
        capacity: s.capacity,
        hits_served: t.served,
        lookups_found: s.hits,
        lookups_missed: s.misses,
        reads: s.reads,
        writes: s.writes,
        evictions: s.evictions,
        faults_full: s.faults_full,
        faults_io: s.faults_io,
        faults_corrupt: s.faults_corrupt,
        skipped: t.skipped,
        hit_ratio: ratio(t.served, requests),
        state,
        last_fault: last_fault.map(|(at, reason)| Failure {
            at: rfc3339(at),
            reason,
        }),
        writes_dropped: t.writes_dropped,
    }
}

/// Why a config version cannot be applied; its text becomes the version's rejection reason.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Icp(#[from] BindError),
    #[error(transparent)]
    Htcp(#[from] HtcpBindError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the console cannot listen on {addr}: {source}")]
    Console {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Versions(#[from] VersionError),
}

/// The ICP socket a config version needs: the current one when nothing about its sockets
/// changed, a newly bound one when something did, none when ICP is disabled.
fn icp_endpoint(
    config: &Config,
    current: Option<&Arc<IcpSocket>>,
) -> Result<Option<Arc<IcpSocket>>, BindError> {
    let Some(settings) = IcpSettings::of(config) else {
        return Ok(None);
    };
    match current {
        Some(current) if current.settings == settings => Ok(Some(current.clone())),
        _ => {
            IcpSocket::prepare(settings, current.map(|c| &**c)).map(|socket| Some(Arc::new(socket)))
        }
    }
}

/// How long a node waits for PostgreSQL to take its `LISTEN` before it checks in anyway.
const LISTEN_CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// The HTCP socket a config version needs: the current one when it listens on the same
/// address, a newly bound one otherwise, none when `htcp_port` is 0.
fn htcp_endpoint(
    config: &Config,
    current: Option<&Arc<HtcpSocket>>,
) -> Result<Option<Arc<HtcpSocket>>, HtcpBindError> {
    let Some(listen) = config.htcp_listen() else {
        return Ok(None);
    };
    match current {
        Some(current) if current.listen == listen => Ok(Some(current.clone())),
        _ => {
            HtcpSocket::prepare(listen, current.map(|c| &**c)).map(|socket| Some(Arc::new(socket)))
        }
    }
}

struct Listening {
    addr: SocketAddr,
    /// `None` once the proxy drains.
    accepting: Option<listener::Accepting>,
}

pub struct Proxy {
    pub shared: Arc<Shared>,
    db: Db,
    data_dir: PathBuf,
    started: Instant,
    /// The listener in force; its lock also makes reloads one at a time.
    listening: tokio::sync::Mutex<Listening>,
    rejected: Mutex<Option<RejectedVersion>>,
    node: Node,
    /// The fleet's live nodes, laid over every runtime as `fleet_peering` says.
    fleet: Fleet,
}

impl Proxy {
    /// Starts on the newest version; when it cannot be applied, on the version last in
    /// force, and never further back: older versions hold settings the admin changed
    /// away from. With neither, refuses to start and says why.
    pub async fn start(db: Db, data_dir: PathBuf, node: Node) -> anyhow::Result<Arc<Proxy>> {
        let stats = Arc::new(Stats::default());
        let newest = db
            .for_node(&node.name, db.latest_for(&node.name).await?)
            .await?;
        // This node's own: in a fleet, the others may have applied a version it cannot.
        let last_applied = match db.last_applied_on(&node.name).await? {
            Some(last) => Some(db.for_node(&node.name, last).await?),
            None => None,
        };
        let reason = match prepare(&newest, &data_dir, &stats) {
            Ok((runtime, bound)) => {
                let started = Start {
                    runtime,
                    bound,
                    stats,
                    rejected: None,
                };
                return Proxy::serve(db, data_dir, node, &newest, started).await;
            }
            Err(error) => error.to_string(),
        };
        let fallback = match last_applied {
            Some(last) if last.id != newest.id => last,
            Some(_) => {
                return refuse(format!(
                    "config version {}, the one last in force, cannot be applied: {reason}; \
                     refusing to start",
                    newest.id
                ))
            }
            None => {
                db.mark(newest.id, VersionState::Rejected, Some(&reason))
                    .await?;
                return refuse(format!(
                    "config version {} rejected: {reason}; no version was ever in force to \
                     fall back to, so refusing to start",
                    newest.id
                ));
            }
        };
        tracing::error!(
            "config version {} rejected: {reason}; starting on version {}, the one last in force",
            newest.id,
            fallback.id
        );
        db.mark(newest.id, VersionState::Rejected, Some(&reason))
            .await?;
        let rejected = RejectedVersion {
            id: newest.id,
            reason,
        };
        match prepare(&fallback, &data_dir, &stats) {
            Ok((runtime, bound)) => {
                let started = Start {
                    runtime,
                    bound,
                    stats,
                    rejected: Some(rejected),
                };
                Proxy::serve(db, data_dir, node, &fallback, started).await
            }
            Err(again) => refuse(format!(
                "config version {} rejected: {}; version {}, the one last in force, cannot be \
                 applied either: {again}; refusing to start",
                rejected.id, rejected.reason, fallback.id
            )),
        }
    }

    /// Starts on the version this node last applied, with the peers then down by hand kept
    /// down (both kept in its data dir), while the database (a fleet's PostgreSQL) does not
    /// answer; `db` connects when it is back.
    pub async fn start_offline(
        db: Db,
        data_dir: PathBuf,
        node: Node,
        last: LastApplied,
        error: &dyn std::fmt::Display,
    ) -> anyhow::Result<Arc<Proxy>> {
        let LastApplied {
            version,
            peers_down,
        } = last;
        let stats = Arc::new(Stats::default());
        node.lost(error, version.id);
        let (runtime, bound) = match prepare(&version, &data_dir, &stats) {
            Ok(prepared) => prepared,
            Err(e) => {
                return refuse(format!(
                    "the database is unreachable ({error}) and config version {}, the one \
                     last applied here, cannot be applied: {e}; refusing to start",
                    version.id
                ))
            }
        };
        // Peers it no longer has are forgotten once the database is back, not here.
        maintenance::lay_over(&runtime, peers_down);
        let started = Start {
            runtime,
            bound,
            stats,
            rejected: None,
        };
        Proxy::serve(db, data_dir, node, &version, started).await
    }

    async fn serve(
        db: Db,
        data_dir: PathBuf,
        node: Node,
        version: &ConfigVersion,
        started: Start,
    ) -> anyhow::Result<Arc<Proxy>> {
        let Start {
            runtime,
            bound,
            stats,
            rejected,
        } = started;
        let online = node.database_down().is_none();
        if online {
            db.mark(version.id, VersionState::Applied, None).await?;
            let gone = maintenance::lay_over(&runtime, db.maintenance().await?);
            maintenance::drop_gone(&db, &stats, &gone).await;
        }
        let addr = bound.local_addr()?;
        let store = Store::new(runtime.config.cache_mem.0);
        let cache_mem = runtime.config.cache_mem.0;
        let disk = open_disk_tier(&runtime.config, &data_dir).await;
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime),
            store: ArcSwap::from_pointee(store),
            disk,
            partials: PartialStore::new(cache_mem),
            own_digest: OwnDigest::default(),
            in_flight: Arc::default(),
            stats,
            draining: tokio::sync::watch::Sender::new(false),
        });
        digest::server::rebuild_periodically(&shared);
        let accepting = listener::serve(bound, &shared)?;
        if let Some(icp) = &shared.runtime.load().icp {
            serve::start(icp, shared.clone());
            tracing::info!("ICP on {}", icp.local);
        }
        if let Some(htcp) = &shared.runtime.load().htcp {
            htcp::serve::start(htcp, shared.clone());
            tracing::info!("HTCP on {}", htcp.local);
        }
        tracing::info!(
            "config version {} in force; proxy listening on {addr}",
            version.id
        );
        let refused = rejected.clone();
        let proxy = Arc::new(Proxy {
            shared,
            db,
            data_dir,
            started: Instant::now(),
            listening: tokio::sync::Mutex::new(Listening {
                addr,
                accepting: Some(accepting),
            }),
            rejected: Mutex::new(rejected),
            node,
            fleet: Fleet::default(),
        });
        if online {
            proxy.report(NodeState::Running).await;
            proxy.record_applied(version).await;
            if let Some(refused) = refused {
                proxy.record_rejected(refused.id, refused.reason).await;
            }
        }
        Ok(proxy)
    }

    /// On a database a fleet shares: applies each new version as it is saved (told by
    /// PostgreSQL's `NOTIFY`), and checks in every few seconds anyway, since what is sent
    /// while the listener reconnects is lost. Runs as long as the process.
    pub async fn follow_fleet(self: Arc<Self>) {
        let mut listener = None;
        let mut tick = tokio::time::interval(Duration::from_secs(HEARTBEAT_S));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if listener.is_none() {
                let connecting = self.db.listen_for_versions();
                listener = match tokio::time::timeout(LISTEN_CONNECT_LIMIT, connecting).await {
                    Ok(Ok(listener)) => listener,
                    Ok(Err(e)) => {
                        self.node.lost(&e, self.shared.runtime.load().version);
                        None
                    }
                    Err(_) => None,
                };
            }
            match listener.as_mut() {
                Some(listening) => tokio::select! {
                    told = listening.next() => match told {
                        Ok(Some(id)) => tracing::info!("config version {id} saved"),
                        Ok(None) => tracing::warn!(
                            "the database's notifications were cut; versions are checked \
                             every {HEARTBEAT_S} s until they are back"
                        ),
                        Err(_) => listener = None,
                    },
                    _ = tick.tick() => {}
                },
                None => {
                    tick.tick().await;
                }
            }
            self.check_in().await;
        }
    }

    /// Writes this node's row: addresses, the version in force, `state`, seen now.
    pub async fn report(&self, state: NodeState) {
        let runtime = self.shared.runtime.load();
        let record = NodeRecord {
            name: self.node.name.clone(),
            http_listen: self.listening.lock().await.addr.to_string(),
            icp_listen: runtime.icp.as_ref().map(|icp| icp.local.to_string()),
            software: env!("CARGO_PKG_VERSION").to_owned(),
            config_version: runtime.version,
            state,
            started_at: self.node.started_at.clone(),
            last_seen: now_rfc3339(),
        };
        if let Err(e) = self.db.report_node(&record).await {
            self.node.lost(&e, runtime.version);
        }
    }

    /// Keeps `version` in the data dir (to start on without the database) and records
    /// that this node applied it.
    async fn record_applied(&self, version: &ConfigVersion) {
        let peers_down = match self.db.maintenance().await {
            Ok(records) => records,
            Err(_) => node::last_applied(&self.data_dir)
                .ok()
                .flatten()
                .map(|last| last.peers_down)
                .unwrap_or_default(),
        };
        let last = LastApplied {
            version: version.clone(),
            peers_down,
        };
        if let Err(e) = node::keep_last_applied(&self.data_dir, &last) {
            tracing::error!("config version {} applied but not kept: {e}", version.id);
        }
        self.record_outcome(version.id, Outcome::Applied).await;
    }

    async fn record_rejected(&self, version: i64, reason: String) {
        self.record_outcome(version, Outcome::Rejected(reason))
            .await;
    }

    async fn record_outcome(&self, version: i64, outcome: Outcome) {
        let at = now_rfc3339();
        if let Err(e) = self
            .db
            .record_outcome(&self.node.name, version, &outcome, &at)
            .await
        {
            tracing::error!("config version {version}: this node's outcome not recorded: {e}");
        }
    }

    /// A fleet node's regular check (and what a notification of a new version starts):
    /// applies the newest version unless this node already refused it, and reports itself.
    /// While the database does not answer, the version in force stays.
    pub async fn check_in(&self) {
        let in_force = self.shared.runtime.load().version;
        let newest = match self.db.latest_for(&self.node.name).await {
            Ok(newest) => newest,
            Err(e) => {
                self.node.lost(&e, in_force);
                return;
            }
        };
        if self.node.reached() {
            self.resync_peers_down().await;
        }
        let refused = self
            .rejected
            .lock()
            .ok()
            .and_then(|r| r.as_ref().map(|r| r.id));
        if newest.id != in_force && refused != Some(newest.id) {
            // Its outcome is logged and recorded by `reload` itself.
            let _ = self.reload().await;
        } else if newest.id == in_force {
            self.apply_own_settings(newest).await;
        }
        self.report(NodeState::Running).await;
        self.follow_registry().await;
    }

    /// Rebuilds the runtime in force, on the same config version, when the fleet's live
    /// nodes changed (one joined, stopped or went unseen) and `fleet_peering` uses them.
    async fn follow_registry(&self) {
        let members = match self.db.fleet_members().await {
            Ok(members) => members,
            Err(e) => {
                tracing::warn!("the fleet's nodes could not be read: {e}");
                return;
            }
        };
        if !self.fleet.follow(members) {
            return;
        }
        let _listening = self.listening.lock().await;
        let current = self.shared.runtime.load_full();
        if current.config.fleet_peering == FleetPeering::Off {
            return;
        }
        let version = match self.db.get(current.version).await {
            Ok(version) => self.db.for_node(&self.node.name, version).await,
            Err(e) => Err(e),
        };
        let built = match version {
            Ok(version) => self.build_runtime(&version, &current).await,
            Err(e) => Err(e.into()),
        };
        match built {
            Ok((runtime, gone)) => {
                self.shared.runtime.store(Arc::new(runtime));
                maintenance::drop_gone(&self.db, &self.shared.stats, &gone).await;
                tracing::info!("the fleet's nodes changed; its peers follow");
            }
            Err(e) => tracing::error!("the fleet's nodes changed but could not be followed: {e}"),
        }
    }

    /// The runtime of `version` beside `current` (whose ICP and HTCP sockets it keeps when
    /// they listen on the same addresses), with the fleet and the peers down by hand laid
    /// over it; and the records of peers down by hand that it does not have.
    async fn build_runtime(
        &self,
        version: &ConfigVersion,
        current: &Runtime,
    ) -> Result<(Runtime, Vec<Maintenance>), ApplyError> {
        let icp = icp_endpoint(&version.config, current.icp.as_ref())?;
        let mut runtime = Runtime::build(version, &self.data_dir, &self.shared.stats, icp)?;
        runtime.htcp = htcp_endpoint(&version.config, current.htcp.as_ref())?;
        self.fleet.lay_over(&mut runtime, &self.node.name);
        let gone = maintenance::lay_over(&runtime, self.db.maintenance().await?);
        Ok((runtime, gone))
    }

    /// Re-applies the version in force when this node's own settings changed (the console's
    /// form on the Nodes page): at once, not at the next version. Settings it cannot apply
    /// (a port taken) leave the old in force, and why is recorded for the console.
    async fn apply_own_settings(&self, in_force: ConfigVersion) {
        let id = in_force.id;
        let own = match self.db.for_node(&self.node.name, in_force).await {
            Ok(own) => own,
            Err(e) => {
                tracing::error!("this node's own settings not read: {e}");
                return;
            }
        };
        let current = self.shared.runtime.load().config.clone();
        if *current == own.config || self.node.refused_own(&own.config) {
            return;
        }
        let refused = match self.apply_newest().await {
            Ok(_) => {
                tracing::info!("config version {id} applied again with this node's own settings");
                self.node.set_refused_own(None);
                self.record_applied(&own).await;
                None
            }
            Err(why) => {
                let why = why.to_string();
                tracing::warn!(
                    "this node's own settings not applied, version {id} stays as it was: {why}"
                );
                self.node.set_refused_own(Some(own.config));
                Some(why)
            }
        };
        if let Err(e) = self
            .db
            .record_own_settings(&self.node.name, refused.as_deref())
            .await
        {
            tracing::error!("the outcome of this node's own settings not recorded: {e}");
        }
    }

    /// Once the database is back after an offline start: the peers down by hand are those
    /// its records say, and the data dir keeps them.
    async fn resync_peers_down(&self) {
        let _listening = self.listening.lock().await;
        match self.db.maintenance().await {
            Ok(records) => {
                maintenance::resync(&self.shared.runtime.load(), records.clone());
                self.keep_peers_down(records);
            }
            Err(e) => tracing::error!("peers down by hand not read: {e}"),
        }
    }

    /// Keeps `peers_down` beside the version last applied in the data dir.
    fn keep_peers_down(&self, peers_down: Vec<Maintenance>) {
        let kept = match node::last_applied(&self.data_dir) {
            Ok(Some(last)) => {
                node::keep_last_applied(&self.data_dir, &LastApplied { peers_down, ..last })
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = kept {
            tracing::error!("peers down by hand not kept in the data dir: {e}");
        }
    }

    async fn apply_newest(&self) -> Result<ReloadReply, ApplyError> {
        let began = Instant::now();
        let mut listening = self.listening.lock().await;
        let newest = self.db.latest_for(&self.node.name).await?;
        let newest = self.db.for_node(&self.node.name, newest).await?;
        let current = self.shared.runtime.load_full();
        // The same version with this node's own settings changed is applied again.
        if newest.id == current.version && newest.config == *current.config {
            return Ok(ReloadReply {
                config_version: current.version,
                changed: false,
                elapsed_ms: began.elapsed().as_millis() as u64,
            });
        }
        let (runtime, gone) = self.build_runtime(&newest, &current).await?;
        // The console follows the version in force: one it could not move to is refused.
        let console = runtime.config.manager_listen;
        if console != current.config.manager_listen {
            listener::check_free(console).map_err(|source| ApplyError::Console {
                addr: console,
                source,
            })?;
        }
        let addr = runtime.config.http_listen();
        // A new port is served before the swap (its first requests may meet the old
        // runtime): once the swap is made, nothing is left that can fail.
        let rebound = if addr != listening.addr {
            let sharing = if addr.port() == listening.addr.port() {
                listener::Sharing::BesideOurs
            } else {
                listener::Sharing::Alone
            };
            let accepting = listener::bind(addr, sharing)
                .and_then(|bound| listener::serve(bound, &self.shared))
                .map_err(|source| ApplyError::Listen { addr, source })?;
            Some(accepting)
        } else {
            None
        };
        let (disk_now, disk_next) = (&current.config, &runtime.config);
        let resized = disk_now.cache_dir_size != disk_next.cache_dir_size;
        match self.shared.disk.as_ref() {
            Some(tier) if resized && disk_next.disk_cache_on() => {
                // A fault is counted by the store; the new bound holds for later writes.
                let _ = tier.resize(disk_next.cache_dir_size.0).await;
            }
            _ if resized => tracing::info!("cache_dir_size takes effect at the next start"),
            _ => {}
        }
        if disk_now.cache_dir != disk_next.cache_dir {
            tracing::info!("cache_dir takes effect at the next start");
        }
        if runtime.config.cache_mem != current.config.cache_mem {
            let resized = self.shared.store.load().resized(runtime.config.cache_mem.0);
            self.shared.store.store(Arc::new(resized));
        }
        let runtime = Arc::new(runtime);
        self.shared.runtime.store(runtime.clone());
        self.switch_icp(current.icp.as_ref(), runtime.icp.as_ref());
        self.switch_htcp(current.htcp.as_ref(), runtime.htcp.as_ref());
        maintenance::drop_gone(&self.db, &self.shared.stats, &gone).await;
        if let Some(accepting) = rebound {
            let old = std::mem::replace(
                &mut *listening,
                Listening {
                    addr,
                    accepting: Some(accepting),
                },
            );
            // Connections accepted on the old listener go on until their clients close them.
            tracing::info!("proxy listener moved from {} to {addr}", old.addr);
        }
        Ok(ReloadReply {
            config_version: newest.id,
            changed: true,
            elapsed_ms: began.elapsed().as_millis() as u64,
        })
    }
}

impl Proxy {
    /// Stops accepting, lets every client connection finish the request it is serving (idle
    /// ones close at once), and waits for them for at most `limit`. Returns how many were
    /// still open then (CONNECT tunnels are not waited for).
    pub async fn drain(&self, limit: Duration) -> usize {
        self.listening.lock().await.accepting = None;
        let draining = &self.shared.draining;
        draining.send_replace(true);
        let _ = tokio::time::timeout(limit, draining.closed()).await;
        draining.receiver_count()
    }

    /// Starts the new ICP socket's receive loops and retires the old one, when they differ.
    fn switch_icp(&self, old: Option<&Arc<IcpSocket>>, new: Option<&Arc<IcpSocket>>) {
        if let (Some(old), Some(new)) = (old, new) {
            if Arc::ptr_eq(old, new) {
                return;
            }
        }
        if let Some(new) = new {
            serve::start(new, self.shared.clone());
        }
        if let Some(old) = old {
            old.retire(new.map(|n| &**n));
        }
        match (old, new) {
            (_, Some(new)) => tracing::info!("ICP now on {}", new.local),
            (Some(old), None) => tracing::info!("ICP on {} turned off", old.local),
            (None, None) => {}
        }
    }
}

impl Proxy {
    /// Starts the new HTCP socket's receive loop and retires the old one, when they differ.
    fn switch_htcp(&self, old: Option<&Arc<HtcpSocket>>, new: Option<&Arc<HtcpSocket>>) {
        if let (Some(old), Some(new)) = (old, new) {
            if Arc::ptr_eq(old, new) {
                return;
            }
        }
        if let Some(new) = new {
            htcp::serve::start(new, self.shared.clone());
            tracing::info!("HTCP now on {}", new.local);
        }
        if let Some(old) = old {
            old.retire();
        }
    }
}

impl ControlHandler for Proxy {
    async fn status(&self) -> StatusReply {
        let runtime = self.shared.runtime.load();
        StatusReply {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s: self.started.elapsed().as_secs(),
            config_version: runtime.version,
            rejected_version: self
                .rejected
                .lock()
                .ok()
                .and_then(|r| r.clone())
                .filter(|r| r.id > runtime.version),
            http_listen: self.listening.lock().await.addr.to_string(),
            icp_listen: runtime.icp.as_ref().map(|icp| icp.local.to_string()),
            manager_listen: runtime.config.manager_listen.to_string(),
            node: self.node.name.clone(),
            database_down: self.node.database_down(),
        }
    }

    fn stats(&self) -> StatsSnapshot {
        let store = self.shared.store.load();
        let (objects, bytes) = store.usage();
        let mut snapshot = self.shared.stats.snapshot(objects, bytes);
        snapshot.memory_capacity = store.capacity();
        snapshot.memory_evictions = store.evictions();
        let runtime = self.shared.runtime.load();
        for client in &mut snapshot.clients {
            client.peer = client
                .address
                .and_then(|ip| peers::by_address(&runtime.peers, ip))
                .map(|peer| peer.config.name.clone());
        }
        let hits = snapshot.hits_fresh + snapshot.hits_stale + snapshot.hits_revalidated;
        snapshot.disk = match &self.shared.disk {
            DiskState::Open(tier) => Some(disk_snapshot(tier, snapshot.requests)),
            DiskState::Closed(reason) => Some(DiskSnapshot {
                closed: Some(reason.clone()),
                state: StoreState::Closed,
                ..DiskSnapshot::default()
            }),
            DiskState::Off => None,
        };
        let from_disk = snapshot.disk.as_ref().map_or(0, |d| d.hits_served);
        snapshot.memory_hits = hits.saturating_sub(from_disk);
        snapshot.memory_hit_ratio = ratio(snapshot.memory_hits, snapshot.requests);
        snapshot.own_digest = self.shared.own_digest.snapshot(SystemTime::now(), rfc3339);
        snapshot
    }

    async fn cache_list(&self, prefix: String, limit: usize) -> CacheListReply {
        let runtime = self.shared.runtime.load_full();
        let memory = self.shared.store.load_full();
        listing::list(
            memory,
            self.shared.disk.as_ref(),
            (runtime.heuristics, &runtime.targets),
            &prefix,
            limit,
        )
        .await
    }

    async fn set_peer(&self, change: PeerChange) -> Result<PeerSnapshot, MaintenanceError> {
        // One at a time with reloads, so a record is never laid over a runtime it missed.
        let _listening = self.listening.lock().await;
        let runtime = self.shared.runtime.load_full();
        let (name, stats) = match &change {
            PeerChange::Down(down) => (
                &down.name,
                maintenance::take_down(&runtime, &self.db, down).await?,
            ),
            PeerChange::Up { name, by } => (
                name,
                maintenance::bring_up(&runtime, &self.db, name, by).await?,
            ),
        };
        match self.db.maintenance().await {
            Ok(records) => self.keep_peers_down(records),
            Err(e) => tracing::error!("peers down by hand not kept in the data dir: {e}"),
        }
        Ok(stats.snapshot(name))
    }

    async fn reopen_logs(&self) -> Result<ReopenReply, String> {
        let runtime = self.shared.runtime.load_full();
        let Some(log) = &runtime.access_log else {
            return Ok(ReopenReply { access_log: None });
        };
        log.reopen().await.map_err(|e| e.to_string())?;
        tracing::info!("access log {} reopened", log.path().display());
        Ok(ReopenReply {
            access_log: Some(log.path().display().to_string()),
        })
    }

    async fn reload(&self) -> Result<ReloadReply, String> {
        match self.apply_newest().await {
            Ok(reply) => {
                if reply.changed {
                    self.shared.stats.reloads_applied.fetch_add(1, Relaxed);
                    if let Err(e) = self
                        .db
                        .mark(reply.config_version, VersionState::Applied, None)
                        .await
                    {
                        tracing::error!(
                            "config version {} applied but not marked: {e}",
                            reply.config_version
                        );
                    }
                    if let Ok(mut rejected) = self.rejected.lock() {
                        *rejected = None;
                    }
                    let version = match self.db.get(reply.config_version).await {
                        Ok(version) => self.db.for_node(&self.node.name, version).await,
                        Err(e) => Err(e),
                    };
                    match version {
                        Ok(version) => self.record_applied(&version).await,
                        Err(e) => tracing::error!(
                            "config version {} applied but not kept: {e}",
                            reply.config_version
                        ),
                    }
                    self.report(NodeState::Running).await;
                    tracing::info!(
                        "config version {} applied in {} ms",
                        reply.config_version,
                        reply.elapsed_ms
                    );
                }
                Ok(reply)
            }
            Err(error) => {
                let reason = error.to_string();
                self.shared.stats.reloads_rejected.fetch_add(1, Relaxed);
                let current = self.shared.runtime.load().version;
                let newest = self
                    .db
                    .latest_for(&self.node.name)
                    .await
                    .map(|v| v.id)
                    .unwrap_or_default();
                if newest > current {
                    if let Err(e) = self
                        .db
                        .mark(newest, VersionState::Rejected, Some(&reason))
                        .await
                    {
                        tracing::error!("config version {newest} rejected but not marked: {e}");
                    }
                    if let Ok(mut rejected) = self.rejected.lock() {
                        *rejected = Some(RejectedVersion {
                            id: newest,
                            reason: reason.clone(),
                        });
                    }
                    self.record_rejected(newest, reason.clone()).await;
                }
                tracing::warn!("config version {newest} rejected: {reason}");
                Err(format!(
                    "config version {newest} rejected: {reason}; version {current} stays in force"
                ))
            }
        }
    }
}

/// A version prepared to serve, with what the start hands over to the proxy.
struct Start {
    runtime: Runtime,
    bound: std::net::TcpListener,
    stats: Arc<Stats>,
    /// The newer version refused at this start, if any.
    rejected: Option<RejectedVersion>,
}

/// Everything a version needs before it can serve: its runtime and its bound listener.
fn prepare(
    version: &ConfigVersion,
    data_dir: &Path,
    stats: &Arc<Stats>,
) -> Result<(Runtime, std::net::TcpListener), ApplyError> {
    let icp = icp_endpoint(&version.config, None)?;
    let mut runtime = Runtime::build(version, data_dir, stats, icp)?;
    runtime.htcp = htcp_endpoint(&version.config, None)?;
    let addr = runtime.config.http_listen();
    let bound = listener::bind(addr, listener::Sharing::Alone)
        .map_err(|source| ApplyError::Listen { addr, source })?;
    Ok((runtime, bound))
}

/// A start that must not happen: said in the log and, as the error, in the terminal.
fn refuse(why: String) -> anyhow::Result<Arc<Proxy>> {
    tracing::error!("{why}");
    Err(anyhow::anyhow!(why))
}
