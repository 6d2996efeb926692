//! The running proxy: the state built from one config version, how it is swapped on
//! `reload`, and what the control socket asks of it.

use std::net::IpAddr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::access_log::AccessLog;
use crate::cache::collapse::InFlight;
use crate::cache::policy::Heuristics;
use crate::cache::store::Store;
use crate::config::{Config, HostPort, ParentEntry};
use crate::control::{ControlHandler, RejectedVersion, ReloadReply, ReopenReply, StatusReply};
use crate::hierarchy::peers::{self, PeerEntry};
use crate::hierarchy::reach::Reach;
use crate::hierarchy::rules::Route;
use crate::hierarchy::upstream::{self, ConnectSettings, UpstreamClient};
use crate::http::{headers, listener};
use crate::icp::endpoint::{Endpoint, IcpSettings};
use crate::stats::{PeerSnapshot, PeerStats, Stats, StatsSnapshot};
use crate::versions::{ConfigVersion, Db, VersionState};

/// An HTTP parent from the `parents` list, with its pooled client.
pub struct Parent {
    /// `host:port`, the name its counters are kept under.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub client: UpstreamClient,
    pub stats: Arc<PeerStats>,
}

/// Everything built from one config version. Requests take the one in force when they
/// start and finish on it, whatever reloads happen meanwhile.
pub struct Runtime {
    pub version: i64,
    pub config: Arc<Config>,
    pub via: HeaderValue,
    pub x_cache_hit: HeaderValue,
    pub x_cache_miss: HeaderValue,
    pub heuristics: Heuristics,
    /// Where requests may go: ports, and the destinations refused.
    pub reach: Arc<Reach>,
    pub origin: UpstreamClient,
    /// Every parent any rule names, once each.
    pub parents: Vec<Parent>,
    /// `parent_rules`, in order; the first that matches decides.
    pub routes: Vec<Route>,
    /// The `parents` list, for requests no rule matches.
    pub default_route: Route,
    pub retry_time: Duration,
    pub stats: Arc<Stats>,
    pub access_log: Option<AccessLog>,
    pub read_timeout: Duration,
    /// The neighbour caches (ICP peers).
    pub peers: Vec<PeerEntry>,
    /// The ICP socket, when ICP is not disabled.
    pub icp: Option<Arc<Endpoint>>,
}

impl Runtime {
    fn build(
        version: &ConfigVersion,
        data_dir: &Path,
        stats: &Arc<Stats>,
        icp: Option<Arc<Endpoint>>,
    ) -> Result<Runtime, String> {
        let config = &version.config;
        config.validate().map_err(|e| e.to_string())?;
        let settings = ConnectSettings {
            local_address: config.bind_address.0,
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
        };
        let mut parents: Vec<Parent> = Vec::new();
        let mut index = |entry: &ParentEntry| -> Option<usize> {
            if is_this_proxy(config, &entry.addr) {
                tracing::warn!("parent {} is this proxy itself; it is ignored", entry.addr);
                return None;
            }
            let name = entry.addr.to_string();
            if let Some(i) = parents.iter().position(|p| p.name == name) {
                return Some(i);
            }
            let client =
                upstream::parent_client(&entry.addr.host, entry.addr.port, settings).ok()?;
            parents.push(Parent {
                stats: stats.peer(&name),
                name,
                host: entry.addr.host.clone(),
                port: entry.addr.port,
                client,
            });
            Some(parents.len() - 1)
        };
        let caching = config.parent_caching.0;
        let mut routes = Vec::new();
        if caching {
            for (i, rule) in config.parent_rules.iter().enumerate() {
                routes.push(Route::compile(i + 1, rule, &mut index)?);
            }
        }
        let default_parents = if caching {
            config
                .parents
                .0
                .iter()
                .filter_map(|p| index(p).map(|i| (i, p.weight)))
                .collect()
        } else {
            Vec::new()
        };
        let default_route = Route::default_rule(default_parents, config.round_robin, true);
        let peers = config
            .peers
            .iter()
            .map(|peer| PeerEntry::build(peer, settings, stats))
            .collect::<Result<Vec<_>, String>>()?;
        let access_log = if config.access_log.is_empty() {
            None
        } else {
            let path = data_dir.join(&config.access_log);
            Some(AccessLog::open(&path).map_err(|e| format!("access_log: {e}"))?)
        };
        let reach = Arc::new(Reach::of(config));
        let name = &config.visible_name;
        let header = |text: String| {
            HeaderValue::from_str(&text)
                .map_err(|_| format!("visible_name {name:?} cannot be sent in a header"))
        };
        Ok(Runtime {
            version: version.id,
            via: headers::via_value(name),
            x_cache_hit: header(format!("HIT from {name}"))?,
            x_cache_miss: header(format!("MISS from {name}"))?,
            heuristics: Heuristics {
                lm_factor: config.heuristic_lm_factor,
                min: Duration::from_secs(config.heuristic_min_s),
                max: Duration::from_secs(config.heuristic_max_s),
            },
            origin: upstream::origin_client(settings, reach.clone()),
            reach,
            parents,
            routes,
            default_route,
            retry_time: Duration::from_secs(config.retry_time_s),
            stats: stats.clone(),
            access_log,
            read_timeout: Duration::from_millis(config.read_timeout_ms),
            peers,
            icp,
            config: Arc::new(config.clone()),
        })
    }

    /// A runtime for unit tests: no ICP socket, no access log.
    #[cfg(test)]
    pub(crate) fn for_tests(mut config: Config) -> Runtime {
        config.access_log.clear();
        let version = ConfigVersion {
            id: 1,
            created_at: String::new(),
            author: String::new(),
            summary: String::new(),
            config,
            state: VersionState::Saved,
            state_reason: None,
            state_at: None,
        };
        Runtime::build(&version, Path::new("."), &Arc::default(), None)
            .expect("a valid test config")
    }

    /// A configured sibling at `ip` that may take hits from us but not misses.
    pub fn is_hits_only_sibling(&self, ip: std::net::IpAddr) -> bool {
        peers::by_address(&self.peers, ip)
            .is_some_and(|peer| peer.is_sibling() && !peer.config.allow_miss)
    }
}

/// The ICP endpoint a config version needs: the current one when nothing about its sockets
/// changed, a newly bound one when something did, none when ICP is disabled.
fn icp_endpoint(
    config: &Config,
    current: Option<&Arc<Endpoint>>,
) -> Result<Option<Arc<Endpoint>>, String> {
    let Some(settings) = IcpSettings::of(config) else {
        return Ok(None);
    };
    match current {
        Some(current) if current.settings == settings => Ok(Some(current.clone())),
        _ => Endpoint::prepare(settings, current.map(|c| &**c))
            .map(|endpoint| Some(Arc::new(endpoint)))
            .map_err(|e| {
                let what = match settings.multicast {
                    Some((group, _)) => format!(
                        "cannot bind the ICP socket on {} (multicast group {group})",
                        settings.listen
                    ),
                    None => format!("cannot bind the ICP socket on {}", settings.listen),
                };
                format!("{what}: {e}")
            }),
    }
}

/// Whether `addr` is this proxy's own listener, which must never be its own parent.
fn is_this_proxy(config: &Config, addr: &HostPort) -> bool {
    if addr.port != config.http_port {
        return false;
    }
    let host: Option<IpAddr> = if addr.host == "localhost" {
        Some(IpAddr::from([127, 0, 0, 1]))
    } else {
        addr.host.parse().ok()
    };
    match (host, config.bind_address.0) {
        (Some(ip), Some(bound)) => ip == bound,
        (Some(ip), None) => ip.is_loopback() || ip.is_unspecified(),
        (None, _) => false,
    }
}

/// What every request handler shares.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub store: ArcSwap<Store>,
    pub in_flight: Arc<InFlight>,
    pub stats: Arc<Stats>,
    /// Set when the proxy stops; every client connection holds a receiver, so the sender
    /// also tells how many are still open.
    pub draining: tokio::sync::watch::Sender<bool>,
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
}

impl Proxy {
    /// Starts on the newest version; when it cannot be applied, on the version last in
    /// force, and never further back: older versions hold settings the admin changed
    /// away from. With neither, refuses to start and says why.
    pub async fn start(db: Db, data_dir: PathBuf) -> anyhow::Result<Arc<Proxy>> {
        let stats = Arc::new(Stats::default());
        let newest = db.latest().await?;
        let last_applied = db.last_applied().await?;
        let reason = match prepare(&newest, &data_dir, &stats) {
            Ok((runtime, bound)) => {
                return Proxy::serve(db, data_dir, &newest, runtime, bound, stats, None).await
            }
            Err(reason) => reason,
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
                Proxy::serve(
                    db,
                    data_dir,
                    &fallback,
                    runtime,
                    bound,
                    stats,
                    Some(rejected),
                )
                .await
            }
            Err(again) => refuse(format!(
                "config version {} rejected: {}; version {}, the one last in force, cannot be \
                 applied either: {again}; refusing to start",
                rejected.id, rejected.reason, fallback.id
            )),
        }
    }

    async fn serve(
        db: Db,
        data_dir: PathBuf,
        version: &ConfigVersion,
        runtime: Runtime,
        bound: std::net::TcpListener,
        stats: Arc<Stats>,
        rejected: Option<RejectedVersion>,
    ) -> anyhow::Result<Arc<Proxy>> {
        db.mark(version.id, VersionState::Applied, None).await?;
        let addr = bound.local_addr()?;
        let store = Store::new(runtime.config.cache_mem.0);
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime),
            store: ArcSwap::from_pointee(store),
            in_flight: Arc::default(),
            stats,
            draining: tokio::sync::watch::Sender::new(false),
        });
        let accepting = listener::serve(bound, &shared)?;
        if let Some(icp) = &shared.runtime.load().icp {
            icp.start(shared.clone());
            tracing::info!("ICP on {}", icp.local);
        }
        tracing::info!(
            "config version {} in force; proxy listening on {addr}",
            version.id
        );
        Ok(Arc::new(Proxy {
            shared,
            db,
            data_dir,
            started: Instant::now(),
            listening: tokio::sync::Mutex::new(Listening {
                addr,
                accepting: Some(accepting),
            }),
            rejected: Mutex::new(rejected),
        }))
    }

    async fn apply_newest(&self) -> Result<ReloadReply, String> {
        let began = Instant::now();
        let mut listening = self.listening.lock().await;
        let newest = self.db.latest().await.map_err(|e| e.to_string())?;
        let current = self.shared.runtime.load_full();
        if newest.id == current.version {
            return Ok(ReloadReply {
                config_version: current.version,
                changed: false,
                elapsed_ms: began.elapsed().as_millis() as u64,
            });
        }
        let icp = icp_endpoint(&newest.config, current.icp.as_ref())?;
        let runtime = Runtime::build(&newest, &self.data_dir, &self.shared.stats, icp)?;
        // The console follows the version in force: one it could not move to is refused.
        let console = runtime.config.manager_listen;
        if console != current.config.manager_listen {
            listener::check_free(console)
                .map_err(|e| format!("the console cannot listen on {console}: {e}"))?;
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
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            Some(accepting)
        } else {
            None
        };
        if runtime.config.cache_mem != current.config.cache_mem {
            let resized = self.shared.store.load().resized(runtime.config.cache_mem.0);
            self.shared.store.store(Arc::new(resized));
        }
        let runtime = Arc::new(runtime);
        self.shared.runtime.store(runtime.clone());
        self.switch_icp(current.icp.as_ref(), runtime.icp.as_ref());
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

    /// Starts the new ICP endpoint's loops and retires the old one, when they differ.
    fn switch_icp(&self, old: Option<&Arc<Endpoint>>, new: Option<&Arc<Endpoint>>) {
        if let (Some(old), Some(new)) = (old, new) {
            if Arc::ptr_eq(old, new) {
                return;
            }
        }
        if let Some(new) = new {
            new.start(self.shared.clone());
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
        }
    }

    fn stats(&self) -> StatsSnapshot {
        let (objects, bytes) = self.shared.store.load().usage();
        self.shared.stats.snapshot(objects, bytes)
    }

    fn set_parent(&self, name: &str, down: Option<&str>) -> Result<PeerSnapshot, String> {
        let runtime = self.shared.runtime.load();
        let parent = runtime
            .parents
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = runtime.parents.iter().map(|p| p.name.as_str()).collect();
                format!(
                    "no parent named {name:?}; the parents are: {}",
                    if names.is_empty() {
                        "(none)".to_owned()
                    } else {
                        names.join(", ")
                    }
                )
            })?;
        parent.stats.health.set_by_hand(down);
        match down {
            Some(reason) => tracing::warn!("parent {name} taken down by hand: {reason}"),
            None => tracing::info!("parent {name} brought up by hand"),
        }
        Ok(self
            .stats()
            .peers
            .into_iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| parent.stats.snapshot(name)))
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
                    tracing::info!(
                        "config version {} applied in {} ms",
                        reply.config_version,
                        reply.elapsed_ms
                    );
                }
                Ok(reply)
            }
            Err(reason) => {
                self.shared.stats.reloads_rejected.fetch_add(1, Relaxed);
                let current = self.shared.runtime.load().version;
                let newest = self.db.latest().await.map(|v| v.id).unwrap_or_default();
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
                }
                tracing::warn!("config version {newest} rejected: {reason}");
                Err(format!(
                    "config version {newest} rejected: {reason}; version {current} stays in force"
                ))
            }
        }
    }
}

/// Everything a version needs before it can serve: its runtime and its bound listener.
fn prepare(
    version: &ConfigVersion,
    data_dir: &Path,
    stats: &Arc<Stats>,
) -> Result<(Runtime, std::net::TcpListener), String> {
    let icp = icp_endpoint(&version.config, None)?;
    let runtime = Runtime::build(version, data_dir, stats, icp)?;
    let addr = runtime.config.http_listen();
    let bound = listener::bind(addr, listener::Sharing::Alone)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok((runtime, bound))
}

/// A start that must not happen: said in the log and, as the error, in the terminal.
fn refuse(why: String) -> anyhow::Result<Arc<Proxy>> {
    tracing::error!("{why}");
    Err(anyhow::anyhow!(why))
}
