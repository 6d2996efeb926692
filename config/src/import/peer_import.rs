//! Reads neighbour caches from other proxies' files: Squid's `cache_peer` lines (a whole
//! squid.conf may be given) and Traffic Server `icp.config` lines. What Canopy has no use for
//! (another squid.conf directive, a `cache_peer` option it does not honour, a multicast peer)
//! is listed as ignored, with its line; a line it cannot read refuses the whole file.

use super::ImportError;
use crate::config::{HtcpPeer, Peer, PeerKind};

/// What a file gave: its peers, and what in it was ignored (line and why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerImport {
    pub peers: Vec<Peer>,
    pub ignored: Vec<ImportError>,
}

/// What a line gave.
enum Line {
    Peer(Peer, Vec<String>),
    Ignored(String),
}

/// The peers in `text` and what was ignored, or every line that cannot be read.
pub fn parse(
    text: &str,
    multicast_group: std::net::Ipv4Addr,
) -> Result<PeerImport, Vec<ImportError>> {
    let mut import = PeerImport {
        peers: Vec::new(),
        ignored: Vec::new(),
    };
    let mut unreadable = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let directive = line.split_whitespace().next().unwrap_or_default();
        let parsed = if directive == "cache_peer" {
            squid_cache_peer(line)
        } else if line.contains(':') && !line.contains(char::is_whitespace) {
            traffic_server_icp(line, multicast_group).map(|peer| Line::Peer(peer, Vec::new()))
        } else if is_squid_directive(directive) {
            Ok(Line::Ignored(squid_directive_ignored(directive)))
        } else {
            Err("neither a squid.conf line nor a Traffic Server icp.config line".to_owned())
        };
        let at = |message: String| ImportError::at_line(index + 1, message);
        match parsed {
            Ok(Line::Peer(peer, notes)) => {
                import.ignored.extend(notes.into_iter().map(at));
                import.peers.push(peer);
            }
            Ok(Line::Ignored(why)) => import.ignored.push(at(why)),
            Err(reason) => unreadable.push(at(reason)),
        }
    }
    if unreadable.is_empty() {
        Ok(import)
    } else {
        Err(unreadable)
    }
}

/// A squid.conf directive's name: lower-case letters, digits and underscores.
fn is_squid_directive(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_lowercase())
        && word
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Why a squid.conf line other than `cache_peer` is not taken, and where Canopy keeps the
/// same thing when it does.
fn squid_directive_ignored(directive: &str) -> String {
    let canopy = match directive {
        "http_port" => Some("http_port (and bind_address)"),
        "icp_port" => Some("icp_port"),
        "visible_hostname" => Some("visible_name"),
        "cache_mem" => Some("cache_mem"),
        "maximum_object_size" => Some("max_object_size"),
        "maximum_object_size_in_memory" => Some("max_object_size_in_memory"),
        "range_offset_limit" => Some("range_offset_limit"),
        "cache_dir" => Some("cache_dir and cache_dir_size"),
        "icp_access" => Some("icp_allowed_clients"),
        "http_access" => Some("allowed_clients"),
        "never_direct" => Some("never_direct"),
        "always_direct" => Some("always_direct"),
        "miss_access" => Some("a peer's deny_misses option"),
        "access_log" => Some("access_log"),
        "icp_query_timeout" => Some("icp_query_timeout_ms"),
        "dead_peer_timeout" => Some("icp_dead_peer_timeout_s"),
        "connect_timeout" | "peer_connect_timeout" => Some("connect_timeout_ms"),
        "read_timeout" => Some("read_timeout_ms"),
        "mcast_icp_query_timeout" | "mcast_groups" => Some("icp_multicast_group"),
        _ => None,
    };
    match canopy {
        Some(setting) => format!(
            "{directive} is not a cache_peer line; ignored (Canopy's setting: {setting}, see \
             `canopy config set`)"
        ),
        None => format!("{directive} is not a cache_peer line; ignored"),
    }
}

fn port(field: &str, what: &str) -> Result<u16, String> {
    field
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("{what} {field:?} is not a port from 1 to 65535"))
}

/// `cache_peer host type http-port icp-port [options]`: a peer, with a note for each option
/// Canopy does not honour.
fn squid_cache_peer(line: &str) -> Result<Line, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [_, host, kind, http_port, icp_port, options @ ..] = fields.as_slice() else {
        return Err("cache_peer needs a host, a type, an HTTP port and an ICP port".to_owned());
    };
    let kind = match *kind {
        "parent" => PeerKind::Parent,
        "sibling" => PeerKind::Sibling,
        "multicast" => {
            return Ok(Line::Ignored(format!(
                "multicast peer {host} not supported; ignored (Canopy queries a multicast \
                 group with icp_multicast_enabled and icp_multicast_group)"
            )))
        }
        other => {
            return Err(format!(
                "peer type {other:?} cannot be mapped: Canopy has parent and sibling peers"
            ))
        }
    };
    // ICP port 0 is Squid's way to write a peer that takes no ICP.
    let no_icp = *icp_port == "0";
    let mut peer = Peer {
        name: (*host).to_owned(),
        host: (*host).to_owned(),
        kind,
        http_port: port(http_port, "HTTP port")?,
        icp_port: if no_icp {
            Peer::default().icp_port
        } else {
            port(icp_port, "ICP port")?
        },
        no_query: no_icp,
        ..Peer::default()
    };
    let mut notes = Vec::new();
    for option in options {
        match option.split_once('=') {
            None => match *option {
                "proxy-only" => peer.proxy_only = true,
                "no-query" => peer.no_query = true,
                "multicast-responder" => peer.multicast_responder = true,
                "allow-miss" => peer.allow_miss = true,
                "htcp" => peer.htcp = HtcpPeer::On,
                "no-digest" => peer.no_digest = true,
                // Canopy exchanges no netdb: what this asks is what it does.
                "no-netdb-exchange" => {}
                "default" | "round-robin" | "weighted-round-robin" if kind == PeerKind::Sibling => {
                    notes.push(format!(
                        "cache_peer {host}: option {option} applies to parents only; ignored"
                    ))
                }
                "default" => peer.default_parent = true,
                "round-robin" => peer.round_robin = true,
                "weighted-round-robin" => {
                    peer.round_robin = true;
                    notes.push(format!(
                        "cache_peer {host}: weighted-round-robin taken as round-robin, weighed \
                         by weight= rather than by measured round-trip time"
                    ))
                }
                // The older spelling of htcp= (htcp-oldsquid), still read by Squid.
                other if other.starts_with("htcp-") => {
                    htcp_modes(&mut peer, &other["htcp-".len()..])?
                }
                other => notes.push(format!(
                    "cache_peer {host}: option {other} not supported by Canopy; ignored"
                )),
            },
            Some(("htcp", modes)) => htcp_modes(&mut peer, modes)?,
            Some(("name", name)) => peer.name = name.to_owned(),
            Some(("weight", weight)) => {
                peer.weight = weight
                    .parse()
                    .ok()
                    .filter(|&w| w >= 1)
                    .ok_or_else(|| format!("weight {weight:?} is not a number from 1 up"))?
            }
            // Squid's connect-timeout is in seconds.
            Some(("connect-timeout", seconds)) => {
                peer.connect_timeout_ms = Some(
                    seconds
                        .parse::<u64>()
                        .ok()
                        .filter(|s| (1..=600).contains(s))
                        .ok_or_else(|| {
                            format!("connect-timeout {seconds:?} is not 1 to 600 seconds")
                        })?
                        * 1000,
                )
            }
            Some(("max-conn", limit)) => {
                peer.max_conn = Some(
                    limit
                        .parse()
                        .ok()
                        .filter(|&n: &u32| n >= 1)
                        .ok_or_else(|| format!("max-conn {limit:?} is not a number from 1 up"))?,
                )
            }
            // Canopy keeps idle connections to every peer in its pool, opened on demand.
            Some(("standby", _)) => notes.push(format!(
                "cache_peer {host}: option standby= ignored: Canopy opens connections to a \
                 peer on demand and keeps idle ones for reuse"
            )),
            Some((other, _)) => notes.push(format!(
                "cache_peer {host}: option {other}= not supported by Canopy; ignored"
            )),
        }
    }
    Ok(Line::Peer(peer, notes))
}

/// The modes of `htcp=` (comma-separated), as Squid reads them: both no-clr and only-clr, or
/// a mode Squid does not know, refuse the line.
fn htcp_modes(peer: &mut Peer, modes: &str) -> Result<(), String> {
    peer.htcp = HtcpPeer::On;
    for mode in modes.split(',') {
        match mode {
            "oldsquid" => peer.htcp = HtcpPeer::Oldsquid,
            "no-clr" => peer.no_clr = true,
            "only-clr" => peer.only_clr = true,
            "no-purge-clr" => peer.no_purge_clr = true,
            "forward-clr" => peer.forward_clr = true,
            other => {
                return Err(format!(
                    "HTCP mode {other:?} unknown: expected oldsquid, no-clr, only-clr, \
                     no-purge-clr or forward-clr"
                ))
            }
        }
    }
    if peer.no_clr && peer.only_clr {
        return Err("htcp modes no-clr and only-clr cannot be set together".to_owned());
    }
    Ok(())
}

/// `host:host_IP:type:proxy_port:icp_port:MC_on:MC_IP:MC_TTL:` (type 1 parent, 2 sibling).
fn traffic_server_icp(line: &str, multicast_group: std::net::Ipv4Addr) -> Result<Peer, String> {
    let fields: Vec<&str> = line.trim_end_matches(':').split(':').collect();
    let [name, ip, kind, http_port, icp_port, mc_on, mc_ip, _mc_ttl] = fields.as_slice() else {
        return Err(format!(
            "icp.config lines have 8 fields (host:host_IP:type:proxy_port:icp_port:MC_on:MC_IP:MC_TTL:), this one has {}",
            fields.len()
        ));
    };
    let kind = match *kind {
        "1" => PeerKind::Parent,
        "2" => PeerKind::Sibling,
        other => {
            return Err(format!(
                "peer type {other:?}: expected 1 (parent) or 2 (sibling)"
            ))
        }
    };
    let host = if ip.is_empty() { name } else { ip };
    if host.is_empty() {
        return Err("neither a host name nor an address is given".to_owned());
    }
    let multicast_responder = match *mc_on {
        "0" => false,
        "1" => {
            let group: std::net::Ipv4Addr = mc_ip
                .parse()
                .map_err(|_| format!("multicast address {mc_ip:?} is not an IPv4 address"))?;
            if group != multicast_group {
                return Err(format!(
                    "multicast group {group} differs from icp_multicast_group {multicast_group}; set that first"
                ));
            }
            true
        }
        other => return Err(format!("MC_on {other:?}: expected 0 or 1")),
    };
    Ok(Peer {
        name: if name.is_empty() { host } else { name }.to_string(),
        host: host.to_string(),
        kind,
        http_port: port(http_port, "proxy port")?,
        icp_port: port(icp_port, "ICP port")?,
        multicast_responder,
        ..Peer::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(239, 255, 31, 30);

    #[test]
    fn squid_lines_map_with_their_options() {
        let peers = parse(
            "# neighbours\ncache_peer 10.0.0.2 sibling 3128 3130 proxy-only no-digest name=east\n\
             cache_peer up.example.net parent 8080 3130 no-query weight=3\n",
            GROUP,
        )
        .unwrap()
        .peers;
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].name, "east");
        assert_eq!(peers[0].kind, PeerKind::Sibling);
        assert!(peers[0].proxy_only);
        assert_eq!(peers[1].name, "up.example.net");
        assert!(peers[1].no_query);
        assert_eq!(peers[1].weight, 3);
    }

    #[test]
    fn htcp_options_read_as_squid_reads_them() {
        let import = parse(
            "cache_peer a sibling 3128 4827 htcp\n\
             cache_peer b sibling 3128 4827 htcp=oldsquid,no-clr\n\
             cache_peer c parent 3128 4827 htcp-only-clr\n\
             cache_peer d parent 3128 4827 htcp=forward-clr,no-purge-clr\n",
            GROUP,
        )
        .unwrap();
        let modes: Vec<(HtcpPeer, [bool; 4])> = import
            .peers
            .iter()
            .map(|p| {
                (
                    p.htcp,
                    [p.no_clr, p.only_clr, p.no_purge_clr, p.forward_clr],
                )
            })
            .collect();
        assert_eq!(
            modes,
            [
                (HtcpPeer::On, [false; 4]),
                (HtcpPeer::Oldsquid, [true, false, false, false]),
                (HtcpPeer::On, [false, true, false, false]),
                (HtcpPeer::On, [false, false, true, true]),
            ]
        );
        assert!(import.ignored.is_empty(), "{:?}", import.ignored);
        for refused in ["htcp=no-clr,only-clr", "htcp=sideways"] {
            let errors = parse(
                &format!("cache_peer a sibling 3128 4827 {refused}\n"),
                GROUP,
            )
            .unwrap_err();
            assert_eq!(errors.len(), 1, "{refused}");
        }
    }

    #[test]
    fn traffic_server_lines_map() {
        let peers = parse(
            "host1:123.12.1.23:1:8080:3130:0:0.0.0.0:1:\n:10.0.0.9:2:3128:3130:1:239.255.31.30:1:\n",
            GROUP,
        )
        .unwrap()
        .peers;
        assert_eq!(peers[0].name, "host1");
        assert_eq!(peers[0].host, "123.12.1.23");
        assert_eq!(peers[0].kind, PeerKind::Parent);
        assert_eq!(peers[1].name, "10.0.0.9");
        assert!(peers[1].multicast_responder);
    }

    #[test]
    fn every_unreadable_line_is_reported() {
        let errors = parse(
            "cache_peer a parent 3128 3130\ncache_peer b cousin 3128 3130\n\
             cache_peer c sibling 80\nHTTP_PORT 3128\nh:1.2.3.4:3:1:2:0:0.0.0.0:1:\n",
            GROUP,
        )
        .unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4, 5]);
        assert!(errors[0].message.contains("cousin"), "{:?}", errors[0]);
    }

    /// A squid.conf as an administrator has it: what Canopy uses is taken, the rest listed.
    #[test]
    fn a_whole_squid_conf_gives_its_peers_and_lists_the_rest() {
        let conf = "\
# Squid 5 configuration
acl localnet src 10.0.0.0/8
http_access allow localnet
http_port 3128
icp_port 3130
cache_peer parent1.example.net parent 3128 3130 default login=PASS no-digest
cache_peer parent2.example.net parent 8080 0 round-robin weight=2 connect-timeout=5 max-conn=20
cache_peer sib.example.net sibling 3128 3130 proxy-only htcp=oldsquid default standby=10
cache_peer 239.255.31.30 multicast 3128 3130 ttl=16
cache_dir ufs /var/spool/squid 100 16 256
";
        let import = parse(conf, GROUP).unwrap();
        let names: Vec<&str> = import.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "parent1.example.net",
                "parent2.example.net",
                "sib.example.net"
            ]
        );
        let parent2 = &import.peers[1];
        assert!(parent2.no_query, "ICP port 0 is no ICP");
        assert_eq!((parent2.http_port, parent2.weight), (8080, 2));
        assert!(import.peers[2].proxy_only);
        assert!(import.peers[0].default_parent);
        assert!(parent2.round_robin && !parent2.default_parent);
        assert_eq!(parent2.connect_timeout_ms, Some(5_000));
        assert_eq!(parent2.max_conn, Some(20));
        assert!(
            !import.peers[2].default_parent,
            "a sibling is no default parent"
        );
        let ignored: Vec<(usize, &str)> = import
            .ignored
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        let said = |line: usize, text: &str| {
            assert!(
                ignored.iter().any(|(l, m)| *l == line && m.contains(text)),
                "line {line} {text:?}: {ignored:?}"
            )
        };
        said(2, "acl is not a cache_peer line");
        said(3, "Canopy's setting: allowed_clients");
        said(4, "Canopy's setting: http_port");
        said(6, "option login= not supported");
        assert_eq!(import.peers[2].htcp, HtcpPeer::Oldsquid);
        said(8, "option default applies to parents only");
        said(8, "option standby= ignored");
        said(9, "multicast peer 239.255.31.30 not supported");
        said(10, "cache_dir is not a cache_peer line");
        assert!(
            !ignored.iter().any(|(_, m)| m.contains("PASS")),
            "{ignored:?}"
        );
        assert_eq!(import.ignored.len(), 9, "{ignored:?}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn kind() -> impl Strategy<Value = PeerKind> {
            prop_oneof![Just(PeerKind::Parent), Just(PeerKind::Sibling)]
        }

        /// A peer as a cache_peer line can give it: name and host may differ.
        fn squid_peer() -> impl Strategy<Value = Peer> {
            (
                "[a-z0-9][a-z0-9.-]{0,20}",
                proptest::option::of("[A-Za-z0-9._-]{1,16}"),
                kind(),
                (1u16.., 1u16..),
                any::<[bool; 6]>(),
                1u32..10_000,
                (
                    proptest::option::of(1u64..=600),
                    proptest::option::of(1u32..10_000),
                ),
            )
                .prop_map(|(host, name, kind, ports, flags, weight, limits)| Peer {
                    name: name.unwrap_or_else(|| host.clone()),
                    host,
                    kind,
                    http_port: ports.0,
                    icp_port: ports.1,
                    proxy_only: flags[0],
                    no_query: flags[1],
                    multicast_responder: flags[2],
                    allow_miss: flags[3],
                    deny_misses: false,
                    weight,
                    default_parent: kind == PeerKind::Parent && flags[4],
                    round_robin: kind == PeerKind::Parent && flags[5],
                    connect_timeout_ms: limits.0.map(|s| s * 1000),
                    max_conn: limits.1,
                    no_digest: flags[0] != flags[1],
                    ..Peer::default()
                })
        }

        fn cache_peer_line(peer: &Peer) -> String {
            let mut line = format!(
                "cache_peer {} {} {} {}",
                peer.host, peer.kind, peer.http_port, peer.icp_port
            );
            let options = [
                (peer.proxy_only, "proxy-only"),
                (peer.no_query, "no-query"),
                (peer.multicast_responder, "multicast-responder"),
                (peer.allow_miss, "allow-miss"),
                (peer.default_parent, "default"),
                (peer.round_robin, "round-robin"),
                (peer.no_digest, "no-digest"),
            ];
            for (_, option) in options.iter().filter(|(on, _)| *on) {
                line.push(' ');
                line.push_str(option);
            }
            if peer.name != peer.host {
                line.push_str(&format!(" name={}", peer.name));
            }
            if peer.weight != 1 {
                line.push_str(&format!(" weight={}", peer.weight));
            }
            if let Some(ms) = peer.connect_timeout_ms {
                line.push_str(&format!(" connect-timeout={}", ms / 1000));
            }
            if let Some(limit) = peer.max_conn {
                line.push_str(&format!(" max-conn={limit}"));
            }
            line
        }

        /// A peer as an icp.config line can give it, and that line.
        fn traffic_server_peer() -> impl Strategy<Value = (Peer, String)> {
            (
                "[a-z0-9][a-z0-9.-]{0,20}",
                any::<std::net::Ipv4Addr>(),
                kind(),
                (1u16.., 1u16..),
                any::<bool>(),
                0u8..=255,
            )
                .prop_map(|(name, ip, kind, ports, multicast, ttl)| {
                    let peer = Peer {
                        name: name.clone(),
                        host: ip.to_string(),
                        kind,
                        http_port: ports.0,
                        icp_port: ports.1,
                        proxy_only: false,
                        no_query: false,
                        multicast_responder: multicast,
                        allow_miss: false,
                        weight: 1,
                        ..Peer::default()
                    };
                    let kind = match kind {
                        PeerKind::Parent => 1,
                        PeerKind::Sibling => 2,
                    };
                    let (mc_on, mc_ip) = if multicast {
                        (1, GROUP)
                    } else {
                        (0, std::net::Ipv4Addr::UNSPECIFIED)
                    };
                    let line = format!(
                        "{name}:{ip}:{kind}:{}:{}:{mc_on}:{mc_ip}:{ttl}:",
                        ports.0, ports.1
                    );
                    (peer, line)
                })
        }

        proptest! {
            #[test]
            fn arbitrary_text_never_panics(text in any::<String>()) {
                let _ = parse(&text, GROUP);
            }

            #[test]
            fn text_that_looks_like_peer_lines_never_panics(
                text in "(cache_peer|parent|sibling|name=|weight=|[a-z0-9.]{1,6}|:|[ \t#\n]){0,40}",
            ) {
                if let Ok(import) = parse(&text, GROUP) {
                    for peer in import.peers {
                        prop_assert!(peer.http_port != 0 && peer.icp_port != 0 && peer.weight >= 1);
                    }
                }
            }

            #[test]
            fn cache_peer_lines_read_back_as_their_peers(
                peers in prop::collection::vec(squid_peer(), 0..6),
            ) {
                let text: Vec<String> = peers.iter().map(cache_peer_line).collect();
                let read = parse(&text.join("\n"), GROUP);
                prop_assert_eq!(read, Ok(PeerImport { peers, ignored: Vec::new() }));
            }

            #[test]
            fn icp_config_lines_read_back_as_their_peers(
                entries in prop::collection::vec(traffic_server_peer(), 0..6),
            ) {
                let text: Vec<&str> = entries.iter().map(|(_, line)| line.as_str()).collect();
                let peers: Vec<Peer> = entries.iter().map(|(peer, _)| peer.clone()).collect();
                let read = parse(&text.join("\n"), GROUP);
                prop_assert_eq!(read, Ok(PeerImport { peers, ignored: Vec::new() }));
            }
        }
    }
}
