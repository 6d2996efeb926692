//! Every scalar setting with its default and help, the `Config` they make, and setting
//! them from text.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::errors::{ConfigErrors, FieldError};
use super::groups::{parse_failure, Control, Editable, Group};
use super::peers::{FleetPeering, IcpMode, Peer};
use super::routing::{ParentList, ParentRule, RoundRobin};
use super::values::{
    is_host_name, ByteSize, CidrList, FieldNameList, Flag, HostList, OptionalAddr, PortList,
    StatusList,
};

macro_rules! settings {
    ($( $key:ident : $ty:ty = $default:expr, $group:ident : $help:literal; )*) => {
        /// The whole configuration of one Canopy: what a config version holds.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $( #[doc = $help] pub $key: $ty, )*
            /// Neighbouring caches (ICP peers), edited with `canopy peer` and the console.
            pub peers: Vec<Peer>,
            /// Routing rules, first match wins; `parents` is the rule for everything else.
            pub parent_rules: Vec<ParentRule>,
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $key: $default, )* peers: Vec::new(), parent_rules: Vec::new() }
            }
        }

        /// A config file's settings, each there or not: what an import lays over a config.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct ConfigFile {
            $( $key: Option<$ty>, )*
            peers: Option<Vec<Peer>>,
            parent_rules: Option<Vec<ParentRule>>,
        }

        impl ConfigFile {
            /// `config` with each setting this file holds set to the file's value.
            pub(crate) fn laid_over(self, mut config: Config) -> Config {
                $( if let Some(value) = self.$key { config.$key = value; } )*
                if let Some(peers) = self.peers { config.peers = peers; }
                if let Some(rules) = self.parent_rules { config.parent_rules = rules; }
                config
            }
        }

        /// Every scalar setting, in the order `canopy config list` shows them.
        pub const SETTINGS: &[Setting] = &[ $( Setting {
            key: stringify!($key),
            help: $help,
            group: Group::$group,
            control: <$ty as Editable>::CONTROL,
        }, )* ];

        impl Group {
    /// The group's settings, in the order `canopy config list` shows them.
    pub fn settings(self) -> impl Iterator<Item = &'static Setting> {
        SETTINGS.iter().filter(move |s| s.group == self)
    }
}

impl Config {
            /// A setting's value written as text, as `config set` takes it.
            pub fn get(&self, key: &str) -> Result<String, FieldError> {
                match key {
                    $( stringify!($key) => Ok(self.$key.to_string()), )*
                    _ => Err(unknown_key(key)),
                }
            }

            /// Parses one setting from text. The whole config should be validated afterwards.
            fn parse_into(&mut self, key: &str, value: &str) -> Result<(), FieldError> {
                match key {
                    $( stringify!($key) => {
                        self.$key = value
                            .trim()
                            .parse::<$ty>()
                            .map_err(|e| {
                                let expected = parse_failure::<$ty>(key, e.to_string());
                                FieldError::new(key, value, expected)
                            })?;
                        Ok(())
                    } )*
                    _ => Err(unknown_key(key)),
                }
            }
        }
    };
}

/// A setting's name, what it is for, the page it is edited on and with what.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: &'static str,
    pub help: &'static str,
    pub group: Group,
    pub control: Control,
}

fn unknown_key(key: &str) -> FieldError {
    let known: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
    FieldError::new(
        key,
        "",
        format!("unknown setting; known settings: {}", known.join(", ")),
    )
}

settings! {
    visible_name: String = default_visible_name(),
        Proxy: "Name shown in Via and X-Cache headers; peers see it in loops.";
    bind_address: OptionalAddr = OptionalAddr(None),
        Proxy: "The one address of this proxy: its listener, ICP socket and outgoing connections. Empty: listen on every address.";
    http_port: u16 = 3128,
        Proxy: "TCP port of the proxy listener.";
    allowed_clients: CidrList = default_allowed_clients(),
        Proxy: "Clients allowed to use the proxy (CIDR list). Anyone else gets 403.";
    purge_allowed_clients: CidrList = default_purge_allowed_clients(),
        Proxy: "Clients that may remove objects from the cache with PURGE (CIDR list; `canopy purge` sends it from this host). Anyone else gets 403.";
    safe_ports: PortList = default_safe_ports(),
        Proxy: "Ports plain HTTP requests may go to (Squid's Safe_ports), such as `80, 443, 1025-65535`; others get 403.";
    ssl_ports: PortList = PortList(vec![443..=443]),
        Proxy: "Ports CONNECT may open tunnels to (Squid's SSL_ports); others get 403.";
    deny_to_localhost: Flag = Flag(false),
        Proxy: "Refuse requests to loopback addresses (127.0.0.0/8, ::1) too; recommended in production. This proxy and its console are refused always.";
    cache_mem: ByteSize = ByteSize(256 << 20),
        Cache: "Memory for cached objects (bytes; K, M, G suffixes).";
    max_object_size: ByteSize = ByteSize(8 << 20),
        Cache: "Largest object stored; bigger ones pass through uncached. At most cache_dir_size (cache_mem with the disk cache off).";
    max_object_size_in_memory: ByteSize = ByteSize(512 << 10),
        Cache: "Largest object kept in memory (Squid's maximum_object_size_in_memory); bigger ones are kept on disk only, and streamed to and from it.";
    cache_dir: String = "cache".to_owned(),
        Cache: "Directory of the disk cache (relative to the data dir), kept across restarts; empty: no disk cache. Takes effect at the next start.";
    cache_dir_size: ByteSize = ByteSize(1 << 30),
        Cache: "Disk for cached objects (bytes; K, M, G suffixes), and never more than a tenth of the free space of its file system at start; 0: no disk cache. Takes effect at the next start.";
    range_offset_limit: ByteSize = ByteSize(1 << 20),
        Cache: "A range request that misses fetches the whole object (to store it, and answer the range from it) when its first byte is within this many bytes of the start, as Squid's range_offset_limit; ranges starting further in, and suffix ranges, are passed upstream as asked. 0: every range passed upstream.";
    heuristic_lm_factor: f64 = 0.1,
        Cache: "Heuristic freshness as a fraction of the time since Last-Modified.";
    heuristic_min_s: u64 = 0,
        Cache: "Floor of heuristic freshness, seconds.";
    heuristic_max_s: u64 = 86_400,
        Cache: "Cap of heuristic freshness, seconds.";
    targeted_cache_control: FieldNameList = FieldNameList::default(),
        Cache: "Targeted cache-control fields (RFC 9213) this cache obeys instead of Cache-Control and Expires, first present wins, such as CDN-Cache-Control when Canopy serves as an origin's CDN; empty: none (Canopy as a forward proxy is not the cache they target).";
    parent_caching: Flag = Flag(true),
        Routing: "Send misses through the HTTP parents listed in parents.";
    parents: ParentList = ParentList::default(),
        Routing: "HTTP parent caches, `host:port; host:port;`, tried in this order: the next only when one fails. With round robin, a weight: `host:port|2;`.";
    round_robin: RoundRobin = RoundRobin::False,
        Routing: "false: in order, the next on failure; true: by client address; strict: rotate; consistent_hash: by URL; carp: by URL as Squid's carp, each parent named by its host.";
    never_direct: Flag = Flag(false),
        Routing: "Never go to the origin server: only through parents.";
    always_direct: Flag = Flag(false),
        Routing: "Always go to the origin server, never through parents.";
    fail_threshold: u32 = 10,
        Routing: "Connection failures within retry_time_s that mark a parent down.";
    retry_time_s: u64 = 300,
        Routing: "How long a parent stays down before it is tried again, seconds.";
    retry_statuses: StatusList = StatusList(vec![502, 503]),
        Routing: "Parent responses that send an idempotent request on to the next parent.";
    debug_headers: Flag = Flag(false),
        Logging: "Add X-Canopy-Hop to responses: which hop served, by which rule, and why.";
    connect_timeout_ms: u64 = 5_000,
        Timeouts: "Time allowed to connect to a parent or origin, milliseconds.";
    read_timeout_ms: u64 = 60_000,
        Timeouts: "Time allowed for an upstream response to start, and between any two reads of its body, milliseconds.";
    client_idle_timeout_s: u64 = 120,
        Timeouts: "How long a client connection may wait for its next request (or its first) before it is closed, seconds.";
    request_timeout_s: u64 = 60,
        Timeouts: "Time allowed for a request's headers to arrive once their first byte has, seconds.";
    tunnel_idle_timeout_s: u64 = 900,
        Timeouts: "A CONNECT tunnel that carries nothing either way for this long is closed, seconds.";
    client_lifetime_s: u64 = 86_400,
        Timeouts: "The longest a client connection may stay open, tunnels included, however busy, seconds.";
    access_log: String = "access.log".to_owned(),
        Logging: "Access log in Squid's native format (relative to the data dir); empty: off.";
    manager_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)),
        Console: "Address and port of the web console.";
    manager_hosts: HostList = HostList::default(),
        Console: "More names the console answers to (such as console.example.com); it always answers to IP addresses and localhost. Any other Host gets 421, so a page whose DNS name was rebound to this console cannot use it.";
    icp_mode: IcpMode = IcpMode::Disabled,
        Icp: "ICP: disabled, receive (answer only) or send-receive.";
    icp_port: u16 = 3130,
        Icp: "UDP port of ICP queries and replies.";
    icp_multicast_enabled: Flag = Flag(false),
        Icp: "Send ICP queries once to the multicast group instead of to each peer.";
    icp_multicast_group: Ipv4Addr = Ipv4Addr::new(239, 255, 31, 30),
        Icp: "ICP multicast group (224.0.0.0/4).";
    icp_multicast_ttl: u8 = 1,
        Icp: "TTL of multicast ICP queries (1-255).";
    icp_query_timeout_ms: u64 = 0,
        Icp: "How long to wait for ICP replies, milliseconds; 0: dynamic.";
    icp_dead_peer_timeout_s: u64 = 10,
        Icp: "A peer that has not answered ICP for this long is dead, seconds.";
    icp_hit_fresh_for_s: u64 = 30,
        Icp: "Answer ICP HIT only for objects fresh at least this much longer, seconds.";
    icp_allowed_clients: CidrList = CidrList::default(),
        Icp: "Caches that are not peers but may send ICP queries (addresses or CIDR networks); any other sender that is not a peer is answered DENIED.";
    icp_hits_only: Flag = Flag(false),
        Icp: "Answer MISS_NOFETCH instead of MISS: peers should not send misses here for now.";
    icp_hit_obj: Flag = Flag(false),
        Icp: "ICP HIT_OBJ: ask peers to put a small fresh object in their reply, and do so for peers that ask; Squid never asks and keeps getting HIT.";
    icp_hit_obj_max_bytes: u64 = 4096,
        Icp: "Largest object (status line and fields included) sent or taken inside an ICP reply, bytes; at most 16361, one datagram less its header.";
    htcp_port: u16 = 0,
        Icp: "UDP port of HTCP (TST queries with the request's headers, CLR); 0: HTCP off. Peers marked htcp are asked over it.";
    htcp_access: CidrList = CidrList::default(),
        Icp: "Caches that are not peers but may send HTCP TST queries (addresses or CIDR networks); any other sender that is not a peer gets no reply.";
    htcp_clr_access: CidrList = CidrList::default(),
        Icp: "Who may remove objects here with HTCP CLR (addresses or CIDR networks), peers included; nobody by default, as with Squid.";
    digest_generation: Flag = Flag(true),
        Icp: "Build a cache digest of this cache's objects and serve it to peers at /squid-internal-periodic/store_digest (Squid's digest_generation). Peers' digests are fetched and used either way, unless a peer has no_digest.";
    digest_rebuild_period_s: u64 = 3600,
        Icp: "How often this cache's digest is rebuilt, seconds (Squid's digest_rebuild_period); peers are told to fetch it again then.";
    digest_bits_per_entry: u8 = 5,
        Icp: "Bits of this cache's digest per object (Squid's digest_bits_per_entry): more bits, fewer false hits, a larger digest.";
    fleet_peering: FleetPeering = FleetPeering::Off,
        Icp: "On a fleet's shared database: off (only the peers configured); siblings (every other live node is also a sibling, fleet:NAME, asked over ICP or, with htcp_port, HTCP); carp (each URL has one home node, chosen by CARP over the live nodes; the others fetch it through that node and do not keep it). Nodes that join or leave are followed without a new config version.";
}

/// The machine's host name, as Squid's `visible_hostname` defaults to it; "canopy" when the
/// name cannot be read or is not a valid header token.
pub(crate) fn default_visible_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| is_host_name(name))
        .unwrap_or_else(|| "canopy".to_owned())
}

/// Squid's default `Safe_ports`: the well-known ports of HTTP, FTP, gopher, wais, http-mgmt,
/// gss-http, multiling HTTP and filemaker, and every unprivileged port.
fn default_safe_ports() -> PortList {
    PortList(vec![
        80..=80,
        443..=443,
        21..=21,
        70..=70,
        210..=210,
        280..=280,
        488..=488,
        591..=591,
        777..=777,
        1025..=65535,
    ])
}

fn default_allowed_clients() -> CidrList {
    "127.0.0.0/8, ::1/128, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7, fe80::/10"
        .parse()
        .unwrap_or_default()
}

/// Squid's PURGE is allowed from the local host only, unless the admin says otherwise.
fn default_purge_allowed_clients() -> CidrList {
    "127.0.0.0/8, ::1/128".parse().unwrap_or_default()
}

impl Config {
    /// Sets one setting from text and checks the result; on any error nothing changes.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigErrors> {
        let mut next = self.clone();
        next.parse_into(key, value)
            .map_err(|e| ConfigErrors(vec![e]))?;
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// Sets many settings from text at once (a form): every parse error is reported.
    pub fn set_all<'a>(
        &mut self,
        values: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), ConfigErrors> {
        let mut next = self.clone();
        let mut errors = Vec::new();
        for (key, value) in values {
            if let Err(e) = next.parse_into(key, value) {
                errors.push(e);
            }
        }
        if let Err(ConfigErrors(more)) = next.validate() {
            for m in more {
                if !errors.iter().any(|e| e.key == m.key) {
                    errors.push(m);
                }
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        *self = next;
        Ok(())
    }

    /// Whether objects are kept on disk too: a directory, and room in it.
    pub fn disk_cache_on(&self) -> bool {
        !self.cache_dir.trim().is_empty() && self.cache_dir_size.0 > 0
    }

    /// The address the proxy listener binds.
    pub fn http_listen(&self) -> SocketAddr {
        let ip = self
            .bind_address
            .0
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        SocketAddr::new(ip, self.http_port)
    }

    /// The address the ICP socket binds.
    pub fn icp_listen(&self) -> SocketAddr {
        let ip = self
            .bind_address
            .0
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        SocketAddr::new(ip, self.icp_port)
    }

    /// The address the HTCP socket binds, when HTCP is on.
    pub fn htcp_listen(&self) -> Option<SocketAddr> {
        let ip = self
            .bind_address
            .0
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        (self.htcp_port != 0).then(|| SocketAddr::new(ip, self.htcp_port))
    }

    /// What changed from `before` to `self`, one readable line per setting or peer.
    pub fn diff(&self, before: &Config) -> Vec<String> {
        let mut changes = Vec::new();
        for setting in SETTINGS {
            let (old, new) = (before.get(setting.key), self.get(setting.key));
            if old != new {
                changes.push(format!(
                    "{}: {} → {}",
                    setting.key,
                    shown(&old.unwrap_or_default()),
                    shown(&new.unwrap_or_default())
                ));
            }
        }
        for peer in &before.peers {
            match self.peers.iter().find(|p| p.name == peer.name) {
                None => changes.push(format!("peer {} removed", peer.name)),
                Some(now) if now != peer => changes.push(format!("peer {} changed", peer.name)),
                Some(_) => {}
            }
        }
        if self.parent_rules != before.parent_rules {
            changes.push(format!(
                "parent rules: {} → {}",
                before.parent_rules.len(),
                self.parent_rules.len()
            ));
        }
        for peer in &self.peers {
            if !before.peers.iter().any(|p| p.name == peer.name) {
                changes.push(format!(
                    "peer {} added ({} {}:{})",
                    peer.name, peer.kind, peer.host, peer.http_port
                ));
            }
        }
        changes
    }
}

fn shown(value: &str) -> String {
    if value.is_empty() {
        "(empty)".to_owned()
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests;
