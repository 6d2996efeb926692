//! The shared runtime context: everything built from one config version (`Runtime`), and
//! what every request handler holds for the proxy's whole life (`Shared`). The request path,
//! the hierarchy and ICP read it; only the orchestrator (`proxy.rs`) builds and swaps it.

use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};

use crate::access_log::{AccessLog, AccessLogError};
use crate::cache::collapse::InFlight;
use crate::cache::disk_tier::{DiskState, DiskTier};
use crate::cache::partial::PartialStore;
use crate::cache::policy::{self, Heuristics};
use crate::cache::store::{Store, Stored};
use crate::digest::builder::OwnDigest;
use crate::hierarchy::fleet_home::FleetHome;
use crate::hierarchy::parents::Parent;
use crate::hierarchy::peers::{self, PeerEntry};
use crate::hierarchy::reach::{ConnectSettings, Reach};
use crate::hierarchy::rules::{Route, RouteError};
use crate::hierarchy::upstream::{self, ParentAddressError, UpstreamClient};
use crate::htcp::socket::HtcpSocket;
use crate::http::headers;
use crate::icp::socket::IcpSocket;
use crate::stats::Stats;
use canopy_config::config::{Config, ConfigErrors, ParentEntry};
use canopy_config::versions::ConfigVersion;
#[cfg(test)]
use canopy_config::versions::VersionState;

/// Why a config version cannot be run; the text becomes the version's rejection reason.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
    #[error("{0}")]
    Route(#[from] RouteError),
    #[error("{0}")]
    Peer(#[from] ParentAddressError),
    #[error("access_log: {0}")]
    AccessLog(#[from] AccessLogError),
    #[error("visible_name {name:?} cannot be sent in a header")]
    VisibleName { name: String },
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
    /// `targeted_cache_control`: the fields this cache obeys before Cache-Control (RFC 9213).
    pub targets: Vec<HeaderName>,
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
    /// Where the rotation of `round_robin` peers stands.
    pub peer_rotation: AtomicUsize,
    /// The ICP socket, when ICP is not disabled.
    pub icp: Option<Arc<IcpSocket>>,
    /// The HTCP socket, when `htcp_port` is set; set by the orchestrator after `build`.
    pub htcp: Option<Arc<HtcpSocket>>,
    /// `fleet_peering = carp`: the fleet's live nodes, each URL's home among them; laid
    /// over by the orchestrator after `build`, as the fleet's siblings are in `peers`.
    pub fleet_home: Option<FleetHome>,
}

/// Where a fresh object a peer may be told HIT for is held.
pub enum HeldForPeers {
    /// In memory: the response, for what a reply says of it (HTCP's headers, HIT_OBJ).
    InMemory(Arc<Stored>),
    /// On disk only: nothing more is known of it without a read.
    OnDisk,
}

impl Runtime {
    /// Whether this cache holds the variant of `key` that `request` selects, fresh
    /// `icp_hit_fresh_for_s` from now: what an ICP or HTCP HIT promises a peer's fetch. In
    /// memory, or else on disk (for objects without Vary, from the freshness the disk tier
    /// keeps in memory: never a read).
    pub fn fresh_for_peers(
        &self,
        store: &Store,
        disk: Option<&DiskTier>,
        key: &str,
        request: &http::HeaderMap,
    ) -> Option<HeldForPeers> {
        let margin = Duration::from_secs(self.config.icp_hit_fresh_for_s);
        let in_memory = store.lookup(key, request).filter(|stored| {
            let left = policy::remaining_freshness(
                stored.status,
                &stored.headers(),
                &stored.times(),
                std::time::SystemTime::now(),
                &self.heuristics,
                &self.targets,
            );
            left >= margin
        });
        match in_memory {
            Some(stored) => Some(HeldForPeers::InMemory(stored)),
            None => disk?
                .fresh_for(key)
                .filter(|left| *left >= margin)
                .map(|_| HeldForPeers::OnDisk),
        }
    }

    pub(crate) fn build(
        version: &ConfigVersion,
        data_dir: &Path,
        stats: &Arc<Stats>,
        icp: Option<Arc<IcpSocket>>,
    ) -> Result<Runtime, RuntimeError> {
        let config = &version.config;
        config.validate()?;
        let settings = ConnectSettings {
            local_address: config.bind_address.0,
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
        };
        let mut parents: Vec<Parent> = Vec::new();
        let mut index = |entry: &ParentEntry| -> Option<usize> {
            // Refused by validation; a version saved by an older Canopy may still hold one.
            if config.is_own_listener(&entry.addr.host, entry.addr.port) {
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
            .collect::<Result<Vec<_>, _>>()?;
        let access_log = if config.access_log.is_empty() {
            None
        } else {
            let path = data_dir.join(&config.access_log);
            Some(AccessLog::open(&path)?)
        };
        let reach = Arc::new(Reach::of(config));
        let name = &config.visible_name;
        let header = |text: String| {
            HeaderValue::from_str(&text)
                .map_err(|_| RuntimeError::VisibleName { name: name.clone() })
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
            targets: (config.targeted_cache_control.0.iter())
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect(),
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
            peer_rotation: AtomicUsize::new(0),
            icp,
            htcp: None,
            fleet_home: None,
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
            canary: None,
        };
        Runtime::build(&version, Path::new("."), &Arc::default(), None)
            .expect("a valid test config")
    }

    /// The name of the configured peer at `ip` whose misses are denied here
    /// (`deny_misses`): it takes hits from us, never misses.
    pub fn misses_denied_to(&self, ip: std::net::IpAddr) -> Option<&str> {
        peers::by_address(&self.peers, ip)
            .filter(|peer| peer.config.deny_misses)
            .map(|peer| peer.config.name.as_str())
    }
}

/// What every request handler shares.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub store: ArcSwap<Store>,
    /// The disk tier, opened at start for the proxy's life.
    pub disk: DiskState,
    /// Partial content from 206 responses, for later range requests.
    pub partials: PartialStore,
    /// This cache's digest, as served to peers.
    pub own_digest: OwnDigest,
    pub in_flight: Arc<InFlight>,
    pub stats: Arc<Stats>,
    /// Set when the proxy stops; every client connection holds a receiver, so the sender
    /// also tells how many are still open.
    pub draining: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    /// Removes every stored variant of `key`, from memory and disk, and its partial
    /// content (PURGE, HTCP CLR, invalidation); whether there was any.
    pub async fn remove_everywhere(&self, key: &str) -> bool {
        let in_memory = self.store.load().remove(key);
        let on_disk = match self.disk.as_ref() {
            Some(disk) => disk.remove(key).await,
            None => false,
        };
        let partial = self.partials.remove(key);
        in_memory || on_disk || partial
    }
}

#[cfg(test)]
impl Shared {
    /// The shared state around [`Runtime::for_tests`].
    pub(crate) fn for_tests(config: Config) -> Arc<Shared> {
        let runtime = Runtime::for_tests(config);
        Arc::new(Shared {
            store: ArcSwap::from_pointee(Store::new(runtime.config.cache_mem.0)),
            disk: DiskState::Off,
            partials: PartialStore::new(runtime.config.cache_mem.0),
            own_digest: OwnDigest::default(),
            in_flight: Arc::default(),
            stats: runtime.stats.clone(),
            runtime: ArcSwap::from_pointee(runtime),
            draining: tokio::sync::watch::Sender::new(false),
        })
    }
}
