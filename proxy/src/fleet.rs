//! Fleet peering (`fleet_peering`): the live nodes of a fleet's registry made peers of this
//! node, as siblings (`fleet:NAME`) or as a CARP array over every node, laid over each
//! runtime the orchestrator builds, and again whenever the registry's live nodes change.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::hierarchy::fleet_home::FleetHome;
use crate::hierarchy::parents::Parent;
use crate::hierarchy::peers::PeerEntry;
use crate::hierarchy::reach::ConnectSettings;
use crate::hierarchy::upstream;
use crate::runtime::Runtime;
use canopy_config::config::{Config, FleetPeering, HtcpPeer, Peer, PeerKind};
use canopy_config::fleet::FleetMember;

/// The live nodes last read from the registry, this one included.
#[derive(Default)]
pub struct Fleet {
    members: Mutex<Vec<FleetMember>>,
}

impl Fleet {
    /// Keeps `members`; whether they differ from those kept before.
    pub fn follow(&self, members: Vec<FleetMember>) -> bool {
        let Ok(mut kept) = self.members.lock() else {
            return false;
        };
        let changed = *kept != members;
        *kept = members;
        changed
    }

    /// The other live nodes laid over `runtime` as its `fleet_peering` says; `me` is this
    /// node's name in the registry.
    pub fn lay_over(&self, runtime: &mut Runtime, me: &str) {
        let members = match self.members.lock() {
            Ok(members) => members.clone(),
            Err(_) => return,
        };
        lay_over(runtime, &members, me);
    }
}

/// What the peer names of fleet nodes begin with: configured peers' names have no colon.
const PEER_PREFIX: &str = "fleet:";

/// The peer name of a fleet node.
pub fn peer_name(node: &str) -> String {
    format!("{PEER_PREFIX}{node}")
}

/// Whether `name` is a fleet node's peer name.
pub fn is_peer_name(name: &str) -> bool {
    name.starts_with(PEER_PREFIX)
}

fn lay_over(runtime: &mut Runtime, members: &[FleetMember], me: &str) {
    let config = runtime.config.clone();
    let settings = ConnectSettings {
        local_address: config.bind_address.0,
        connect_timeout: Duration::from_millis(config.connect_timeout_ms),
    };
    let stats = runtime.stats.clone();
    match config.fleet_peering {
        FleetPeering::Off => {}
        FleetPeering::Siblings => {
            for member in members.iter().filter(|m| m.name != me) {
                let Some(peer) = sibling(&config, member) else {
                    continue;
                };
                match PeerEntry::build(&peer, settings, &stats) {
                    Ok(entry) => runtime.peers.push(entry),
                    Err(e) => tracing::warn!("fleet node {} left out: {e}", member.name),
                }
            }
        }
        FleetPeering::Carp => {
            let mut array = Vec::new();
            let mut visible_names = vec![config.visible_name.clone()];
            for member in members {
                if member.name == me {
                    array.push((member.name.clone(), None));
                    continue;
                }
                let Some((host, port)) = http_address(member) else {
                    continue;
                };
                let name = peer_name(&member.name);
                match upstream::parent_client(&host, port, settings) {
                    Ok(client) => array.push((
                        member.name.clone(),
                        Some(Parent {
                            stats: stats.peer(&name),
                            name,
                            host,
                            port,
                            client,
                        }),
                    )),
                    Err(e) => tracing::warn!("fleet node {} left out: {e}", member.name),
                }
                visible_names.push(visible_name(&config, member).to_owned());
            }
            runtime.fleet_home = Some(FleetHome::new(array, visible_names));
        }
    }
    for member in members.iter().filter(|m| m.name != me) {
        if visible_name(&config, member) == config.visible_name {
            tracing::warn!(
                "fleet node {} shows the same visible_name as this one ({}): requests between \
                 them are taken for loops and go direct; give each node its own \
                 (canopy node set NODE visible_name NAME)",
                member.name,
                config.visible_name
            );
        }
    }
}

/// The name a node shows in Via: its own, or the fleet's.
fn visible_name<'a>(config: &'a Config, member: &'a FleetMember) -> &'a str {
    member
        .visible_name
        .as_deref()
        .unwrap_or(&config.visible_name)
}

/// Where a node's proxy is reached: the address it listens on, or its name when it
/// listens on every address.
fn http_address(member: &FleetMember) -> Option<(String, u16)> {
    let Ok(addr) = member.http_listen.parse::<SocketAddr>() else {
        tracing::warn!(
            "fleet node {} registered {:?}, not an address and port; it is left out",
            member.name,
            member.http_listen
        );
        return None;
    };
    let host = if addr.ip().is_unspecified() {
        member.name.clone()
    } else {
        addr.ip().to_string()
    };
    Some((host, addr.port()))
}

/// A node as a sibling: asked over HTCP when this fleet has an `htcp_port`, else over ICP
/// when the node takes ICP queries; its digest used as any Canopy sibling's. `None` when
/// a configured peer is at the same address (the configured one wins) or it is this
/// proxy's own listener.
fn sibling(config: &Config, member: &FleetMember) -> Option<Peer> {
    let (host, http_port) = http_address(member)?;
    let configured = config
        .peers
        .iter()
        .any(|p| p.host.eq_ignore_ascii_case(&host) && p.http_port == http_port);
    if configured || config.is_own_listener(&host, http_port) {
        return None;
    }
    let icp_port = member
        .icp_listen
        .as_deref()
        .and_then(|listen| listen.parse::<SocketAddr>().ok())
        .map(|addr| addr.port());
    let (icp_port, htcp, no_query) = match (config.htcp_port, icp_port) {
        (0, Some(port)) => (port, HtcpPeer::Off, false),
        (0, None) => (config.icp_port, HtcpPeer::Off, true),
        (htcp_port, _) => (htcp_port, HtcpPeer::On, false),
    };
    Some(Peer {
        name: peer_name(&member.name),
        host,
        kind: PeerKind::Sibling,
        http_port,
        icp_port,
        htcp,
        no_query,
        ..Peer::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_config::config::IcpMode;

    fn member(name: &str, listen: &str, icp: Option<&str>) -> FleetMember {
        FleetMember {
            name: name.to_owned(),
            http_listen: listen.to_owned(),
            icp_listen: icp.map(str::to_owned),
            visible_name: Some(format!("{name}.example")),
        }
    }

    fn fleet() -> Vec<FleetMember> {
        vec![
            member("a", "127.0.0.1:3128", Some("127.0.0.1:3130")),
            member("b", "127.0.0.2:3128", Some("127.0.0.2:3131")),
            member("c", "0.0.0.0:3129", None),
        ]
    }

    fn runtime(peering: &str) -> Runtime {
        let mut config = Config {
            icp_mode: IcpMode::SendReceive,
            bind_address: "127.0.0.9".parse().unwrap(),
            ..Config::default()
        };
        config.set("fleet_peering", peering).unwrap();
        Runtime::for_tests(config)
    }

    #[test]
    fn the_other_live_nodes_are_siblings_and_configured_peers_win() {
        let mut on_a = runtime("siblings");
        on_a.config = std::sync::Arc::new(Config {
            peers: vec![Peer {
                name: "mine".to_owned(),
                host: "127.0.0.2".to_owned(),
                http_port: 3128,
                ..Peer::default()
            }],
            ..(*on_a.config).clone()
        });
        lay_over(&mut on_a, &fleet(), "a");
        let names: Vec<&str> = on_a.peers.iter().map(|p| p.config.name.as_str()).collect();
        assert_eq!(
            names,
            ["fleet:c"],
            "b is configured already, a is this node"
        );
        let c = &on_a.peers[0].config;
        assert_eq!((c.host.as_str(), c.http_port), ("c", 3129));
        assert!(c.no_query, "c takes no ICP queries");
        let mut on_c = runtime("siblings");
        lay_over(&mut on_c, &fleet(), "c");
        let b = on_c
            .peers
            .iter()
            .find(|p| p.config.name == "fleet:b")
            .unwrap();
        assert_eq!(
            (b.config.kind, b.config.icp_port),
            (PeerKind::Sibling, 3131)
        );
        assert!(b.is_asked());
    }

    #[test]
    fn with_an_htcp_port_siblings_are_asked_over_htcp() {
        let mut on_c = runtime("siblings");
        on_c.config = std::sync::Arc::new(Config {
            htcp_port: 4827,
            ..(*on_c.config).clone()
        });
        lay_over(&mut on_c, &fleet(), "c");
        assert_eq!(on_c.peers.len(), 2);
        assert!(on_c
            .peers
            .iter()
            .all(|p| p.config.htcp == HtcpPeer::On && p.config.icp_port == 4827));
    }

    #[test]
    fn carp_makes_an_array_of_every_live_node_and_off_adds_nothing() {
        let mut on_a = runtime("carp");
        lay_over(&mut on_a, &fleet(), "a");
        assert!(on_a.peers.is_empty());
        let home = on_a.fleet_home.as_ref().expect("an array");
        assert_eq!(home.others().count(), 2);
        let mut off = runtime("off");
        lay_over(&mut off, &fleet(), "a");
        assert!(off.peers.is_empty() && off.fleet_home.is_none());
    }

    #[test]
    fn following_says_when_the_live_nodes_change() {
        let fleet_view = Fleet::default();
        assert!(fleet_view.follow(fleet()));
        assert!(!fleet_view.follow(fleet()));
        assert!(fleet_view.follow(fleet()[..2].to_vec()));
    }
}
