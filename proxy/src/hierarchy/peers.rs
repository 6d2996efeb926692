//! The peer table: each configured neighbour cache with its resolved addresses, its HTTP
//! client and its counters.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::hierarchy::reach::ConnectSettings;
use crate::hierarchy::upstream::{self, ParentAddressError, UpstreamClient};
use crate::stats::{PeerStats, Stats};
use canopy_config::config::{HtcpPeer, Peer, PeerKind};

/// One neighbour as the running proxy sees it.
pub struct PeerEntry {
    pub config: Peer,
    /// Its address, resolved once when the config version is applied: Squid knows a peer's
    /// datagrams by this address and the ICP port, and so does Canopy.
    pub address: Option<IpAddr>,
    pub client: UpstreamClient,
    pub stats: Arc<PeerStats>,
}

impl PeerEntry {
    pub fn build(
        peer: &Peer,
        settings: ConnectSettings,
        stats: &Stats,
    ) -> Result<Self, ParentAddressError> {
        let address = resolve(&peer.host);
        if address.is_none() {
            tracing::warn!(
                "peer {}: cannot resolve {:?}; it gets no ICP queries and none of its queries are answered",
                peer.name,
                peer.host
            );
        }
        let counters = stats.peer(&peer.name);
        if !peer.no_query && !peer.only_clr {
            counters.icp_tracked.store(true, Relaxed);
        }
        let settings = ConnectSettings {
            connect_timeout: peer
                .connect_timeout_ms
                .map_or(settings.connect_timeout, Duration::from_millis),
            ..settings
        };
        let client = upstream::parent_client(&peer.host, peer.http_port, settings)?
            .with_max_conn(peer.max_conn);
        Ok(PeerEntry {
            client,
            config: peer.clone(),
            address,
            stats: counters,
        })
    }

    /// Where its ICP queries go and its replies come from.
    pub fn icp_addr(&self) -> Option<SocketAddr> {
        self.address
            .map(|ip| SocketAddr::new(ip, self.config.icp_port))
    }

    pub fn is_sibling(&self) -> bool {
        self.config.kind == PeerKind::Sibling
    }

    /// Whether this peer takes queries at all (ICP, or HTCP TST for an HTCP peer).
    pub fn takes_queries(&self) -> bool {
        !self.config.no_query && !self.config.only_clr && self.address.is_some()
    }

    /// Whether it is asked over HTCP (at its ICP port field) rather than ICP.
    pub fn asked_over_htcp(&self) -> bool {
        self.config.htcp != HtcpPeer::Off
    }

    /// Whether a round of queries asks it now: it takes them and is not down by hand.
    pub fn is_asked(&self) -> bool {
        self.takes_queries() && !self.stats.health.is_down_by_hand()
    }
}

fn resolve(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    (host, 0)
        .to_socket_addrs()
        .ok()?
        .map(|addr| addr.ip())
        .find(IpAddr::is_ipv4)
}

/// Maps an IPv4-mapped IPv6 address to its IPv4 form, so addresses compare as peers see them.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The peer whose address is `ip`, if any.
pub fn by_address(peers: &[PeerEntry], ip: IpAddr) -> Option<&PeerEntry> {
    let ip = canonical(ip);
    peers.iter().find(|p| p.address == Some(ip))
}
