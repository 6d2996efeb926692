//! Neighbour caches (Squid's cache_peer) and how this proxy takes part in ICP.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How this proxy takes part in ICP (Traffic Server's three modes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IcpMode {
    #[default]
    Disabled,
    /// Answer queries from peers, never send any.
    Receive,
    /// Answer queries and query peers on every miss that may go to them.
    SendReceive,
}

impl IcpMode {
    pub const ALL: [IcpMode; 3] = [IcpMode::Disabled, IcpMode::Receive, IcpMode::SendReceive];

    pub fn as_str(self) -> &'static str {
        match self {
            IcpMode::Disabled => "disabled",
            IcpMode::Receive => "receive",
            IcpMode::SendReceive => "send-receive",
        }
    }
}

impl FromStr for IcpMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        IcpMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                format!("{s:?} is not an ICP mode: expected disabled, receive or send-receive")
            })
    }
}

impl fmt::Display for IcpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a peer is asked over HTCP instead of ICP, and in which of Squid's layouts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HtcpPeer {
    /// Asked over ICP.
    #[default]
    Off,
    /// HTCP 0.1, as Squid's `htcp`.
    On,
    /// The layout of Squid before 2.6 (MINOR 0), as Squid's `htcp=oldsquid`.
    Oldsquid,
}

impl HtcpPeer {
    pub const ALL: [HtcpPeer; 3] = [HtcpPeer::Off, HtcpPeer::On, HtcpPeer::Oldsquid];

    pub fn as_str(self) -> &'static str {
        match self {
            HtcpPeer::Off => "off",
            HtcpPeer::On => "on",
            HtcpPeer::Oldsquid => "oldsquid",
        }
    }

    pub fn is_off(&self) -> bool {
        *self == HtcpPeer::Off
    }
}

impl FromStr for HtcpPeer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        HtcpPeer::ALL
            .into_iter()
            .find(|m| m.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("{s:?} is not an HTCP choice: expected off, on or oldsquid"))
    }
}

impl fmt::Display for HtcpPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a peer is one level up (parent) or beside us (sibling) in the hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    Parent,
    Sibling,
}

impl PeerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerKind::Parent => "parent",
            PeerKind::Sibling => "sibling",
        }
    }
}

impl FromStr for PeerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "parent" => Ok(PeerKind::Parent),
            "sibling" => Ok(PeerKind::Sibling),
            other => Err(format!(
                "{other:?} is not a peer type: expected parent or sibling"
            )),
        }
    }
}

impl fmt::Display for PeerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A neighbouring cache that takes ICP queries and HTTP requests from us (Squid's cache_peer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub name: String,
    pub host: String,
    #[serde(rename = "type")]
    pub kind: PeerKind,
    pub http_port: u16,
    pub icp_port: u16,
    /// Objects fetched through this peer are not stored here.
    #[serde(default)]
    pub proxy_only: bool,
    /// Never sent ICP queries.
    #[serde(default)]
    pub no_query: bool,
    /// Answers queries sent to the multicast group, so its reply is expected there.
    #[serde(default)]
    pub multicast_responder: bool,
    /// A sibling we may send requests it has to fetch: no `only-if-cached` on them
    /// (Squid's allow-miss).
    #[serde(default)]
    pub allow_miss: bool,
    /// Requests from this peer's address are served from the cache only, a miss answered
    /// 504 (Squid's `miss_access deny` for the peer). Off unless the administrator sets it.
    #[serde(default)]
    pub deny_misses: bool,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// A parent used as the last resort, when no other parent can take a miss (Squid's
    /// `default`).
    #[serde(default, rename = "default")]
    pub default_parent: bool,
    /// A parent in the rotation that takes the misses no ICP reply placed, each in turn by
    /// weight (Squid's `round-robin`).
    #[serde(default)]
    pub round_robin: bool,
    /// How long to wait for a connection to this peer, instead of `connect_timeout_ms`
    /// (Squid's `connect-timeout=`, in milliseconds here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// At most this many connections open to this peer, idle ones included; a request that
    /// finds them all busy passes the peer over (Squid's `max-conn=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_conn: Option<u32>,
    /// Asked over HTCP, at `icp_port`, instead of ICP (Squid's `htcp`, `htcp=oldsquid`).
    #[serde(default, skip_serializing_if = "HtcpPeer::is_off")]
    pub htcp: HtcpPeer,
    /// Sent no HTCP CLR when an object is purged or invalidated here (Squid's `htcp=no-clr`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_clr: bool,
    /// Sent HTCP CLR but never asked about objects (Squid's `htcp=only-clr`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub only_clr: bool,
    /// Sent the CLRs of invalidations but not those of PURGEs here (Squid's
    /// `htcp=no-purge-clr`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_purge_clr: bool,
    /// Sent the CLRs this proxy receives and obeys, passed on (Squid's `htcp=forward-clr`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub forward_clr: bool,
    /// Never fetch or consult this peer's cache digest (Squid's `no-digest`).
    #[serde(default)]
    pub no_digest: bool,
}

fn is_false(on: &bool) -> bool {
    !on
}

/// A sibling on the usual ports with no option set: the console's blank form, and where
/// an imported line starts.
impl Default for Peer {
    fn default() -> Self {
        Peer {
            name: String::new(),
            host: String::new(),
            kind: PeerKind::Sibling,
            http_port: 3128,
            icp_port: 3130,
            proxy_only: false,
            no_query: false,
            multicast_responder: false,
            allow_miss: false,
            deny_misses: false,
            weight: default_weight(),
            default_parent: false,
            round_robin: false,
            connect_timeout_ms: None,
            max_conn: None,
            htcp: HtcpPeer::Off,
            no_clr: false,
            only_clr: false,
            no_purge_clr: false,
            forward_clr: false,
            no_digest: false,
        }
    }
}

fn default_weight() -> u32 {
    1
}

/// How the nodes of a fleet (one shared database) use each other's caches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FleetPeering {
    /// Only the peers configured.
    #[default]
    Off,
    /// Every other live node is a sibling too, asked over ICP (HTCP with `htcp_port`).
    Siblings,
    /// Each URL has one home node, chosen by CARP over every live node; the others fetch
    /// it through the home node.
    Carp,
}

impl FleetPeering {
    pub const ALL: [FleetPeering; 3] = [
        FleetPeering::Off,
        FleetPeering::Siblings,
        FleetPeering::Carp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FleetPeering::Off => "off",
            FleetPeering::Siblings => "siblings",
            FleetPeering::Carp => "carp",
        }
    }
}

impl FromStr for FleetPeering {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FleetPeering::ALL
            .into_iter()
            .find(|m| m.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("{s:?} is not a fleet peering: expected off, siblings or carp"))
    }
}

impl fmt::Display for FleetPeering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
