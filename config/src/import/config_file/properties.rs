//! Properties of the TOML import (`canopy config import`): it never panics, and every valid
//! config exported with `to_toml` imports as the same config.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;
use proptest::prelude::*;

use crate::config::*;

fn cidr_list() -> impl Strategy<Value = CidrList> {
    let v4 = (any::<Ipv4Addr>(), 0u8..=32).prop_map(|(a, p)| IpNet::new(a.into(), p));
    let v6 = (any::<std::net::Ipv6Addr>(), 0u8..=128).prop_map(|(a, p)| IpNet::new(a.into(), p));
    prop::collection::vec(prop_oneof![v4, v6], 0..4)
        .prop_map(|nets| CidrList(nets.into_iter().filter_map(Result::ok).collect()))
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9][a-z0-9.-]{0,15}",
        any::<IpAddr>().prop_map(|a| a.to_string()),
    ]
}

fn parent_list() -> impl Strategy<Value = ParentList> {
    prop::collection::vec((host(), 1u16.., 1u32..=1000), 0..4).prop_map(|entries| {
        let mut list: Vec<ParentEntry> = Vec::new();
        for (host, port, weight) in entries {
            let addr = HostPort { host, port };
            if list.iter().all(|p| p.addr != addr) {
                list.push(ParentEntry { addr, weight });
            }
        }
        ParentList(list)
    })
}

/// `parents` as `mode` accepts them: CARP names a parent by its host, so one per host.
fn for_mode(parents: ParentList, mode: RoundRobin) -> ParentList {
    if mode != RoundRobin::Carp {
        return parents;
    }
    let mut hosts = BTreeSet::new();
    ParentList(
        parents
            .0
            .into_iter()
            .filter(|p| hosts.insert(p.addr.host.to_ascii_lowercase()))
            .collect(),
    )
}

fn peers() -> impl Strategy<Value = Vec<Peer>> {
    let peer = (
        "[A-Za-z0-9._-]{1,12}",
        host(),
        prop_oneof![Just(PeerKind::Parent), Just(PeerKind::Sibling)],
        (1u16.., 1u16..),
        any::<[bool; 4]>(),
        1u32..,
    )
        .prop_map(|(name, host, kind, ports, flags, weight)| Peer {
            name,
            host,
            kind,
            http_port: ports.0,
            icp_port: ports.1,
            proxy_only: flags[0],
            no_query: flags[1],
            multicast_responder: flags[2],
            allow_miss: flags[3],
            deny_misses: flags[0] != flags[3],
            weight,
            default_parent: kind == PeerKind::Parent && flags[1],
            round_robin: kind == PeerKind::Parent && flags[2],
            connect_timeout_ms: flags[0].then_some(2_500),
            max_conn: flags[3].then_some(8),
            htcp: HtcpPeer::ALL[weight as usize % 3],
            no_clr: weight % 3 != 0 && flags[0],
            only_clr: weight % 3 != 0 && !flags[0] && flags[1],
            no_purge_clr: weight % 3 != 0 && flags[2],
            forward_clr: weight % 3 != 0 && flags[3],
            no_digest: flags[1] != flags[2],
        });
    prop::collection::vec(peer, 0..4).prop_map(|mut peers| {
        let mut names = BTreeSet::new();
        peers.retain(|p| names.insert(p.name.clone()));
        peers
    })
}

/// A rule that validates: a matcher, a regex that compiles, a known scheme, parents or
/// go_direct.
fn parent_rules() -> impl Strategy<Value = Vec<ParentRule>> {
    let rule = (
        "[a-z0-9.-]{1,20}",
        proptest::option::of("[a-z0-9.-]{1,20}"),
        proptest::option::of(any::<Ipv4Addr>().prop_map(|a| a.to_string())),
        proptest::option::of("\\PC{0,12}".prop_map(|text| regex::escape(&text))),
        proptest::option::of(prop_oneof![Just("http"), Just("https")]),
        proptest::option::of(1u16..),
        proptest::option::of("[A-Z]{1,8}"),
        parent_list(),
        prop::sample::select(RoundRobin::ALL.to_vec()),
        any::<bool>(),
    )
        .prop_map(
            |(domain, host, ip, regex, scheme, port, method, parents, round_robin, go_direct)| {
                ParentRule {
                    dest_domain: Some(domain),
                    dest_host: host,
                    dest_ip: ip,
                    url_regex: regex,
                    scheme: scheme.map(str::to_owned),
                    port,
                    method,
                    go_direct: go_direct || parents.0.is_empty(),
                    parents: for_mode(parents, round_robin),
                    round_robin,
                }
            },
        );
    prop::collection::vec(rule, 0..3)
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    (any::<IpAddr>(), 1u16..).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn flag() -> impl Strategy<Value = Flag> {
    any::<bool>().prop_map(Flag)
}

/// Every setting is drawn; `..Config::default()` keeps this compiling, with defaults, for
/// settings added after it was written.
#[allow(clippy::needless_update)]
fn valid_config() -> impl Strategy<Value = Config> {
    let naming = (
        "[a-z][a-z0-9.-]{0,20}",
        proptest::option::of(any::<IpAddr>()),
        1u16..,
        cidr_list(),
        socket_addr(),
        "\\PC{0,20}",
    );
    let cache = (
        (0u64..1 << 40, 0u64..1 << 40),
        0.0f64..=10.0,
        (any::<u64>(), any::<u64>()),
    );
    let routing = (
        (
            flag(),
            parent_list(),
            prop::sample::select(RoundRobin::ALL.to_vec()),
        ),
        (flag(), flag(), flag()),
        (1u32.., 1u64..),
        prop::collection::vec(100u16..=599, 0..4),
        (1u64..=600_000, 1u64..=3_600_000),
        parent_rules(),
        peers(),
    );
    let icp = (
        prop::sample::select(IcpMode::ALL.to_vec()),
        1u16..,
        (flag(), flag()),
        (any::<[u8; 3]>(), 224u8..=239, 1u8..),
        0u64..=60_000,
        (1u64.., any::<u64>()),
        cidr_list(),
    );
    (naming, cache, routing, icp).prop_map(|(naming, cache, routing, icp)| {
        let (visible_name, bind_address, http_port, allowed_clients, manager_listen, access_log) =
            naming;
        let ((a, b), lm_factor, (h1, h2)) = cache;
        let (
            default_route,
            (never_direct, always_direct, debug_headers),
            retry,
            statuses,
            timeouts,
            rules,
            peers,
        ) = routing;
        let (
            mode,
            icp_port,
            (multicast, hits_only),
            (group, first, ttl),
            query_timeout,
            icp_times,
            icp_clients,
        ) = icp;
        Config {
            visible_name,
            bind_address: OptionalAddr(bind_address),
            http_port,
            allowed_clients,
            cache_mem: ByteSize(a.max(b)),
            max_object_size: ByteSize(a.min(b)),
            max_object_size_in_memory: ByteSize(a.min(b)),
            cache_dir_size: ByteSize(a.max(b)),
            heuristic_lm_factor: lm_factor,
            heuristic_min_s: h1.min(h2),
            heuristic_max_s: h1.max(h2),
            parent_caching: default_route.0,
            parents: for_mode(default_route.1, default_route.2),
            round_robin: default_route.2,
            never_direct,
            always_direct: Flag(always_direct.0 && !never_direct.0),
            fail_threshold: retry.0,
            retry_time_s: retry.1,
            retry_statuses: StatusList(statuses),
            debug_headers,
            connect_timeout_ms: timeouts.0,
            read_timeout_ms: timeouts.1,
            access_log,
            manager_listen,
            icp_mode: mode,
            icp_port,
            icp_multicast_enabled: multicast,
            icp_multicast_group: Ipv4Addr::new(first, group[0], group[1], group[2]),
            icp_multicast_ttl: ttl,
            icp_query_timeout_ms: query_timeout,
            icp_dead_peer_timeout_s: icp_times.0,
            icp_hit_fresh_for_s: icp_times.1,
            icp_allowed_clients: icp_clients,
            icp_hits_only: hits_only,
            peers,
            parent_rules: rules,
            ..Config::default()
        }
    })
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = Config::from_toml(&text);
    }

    #[test]
    fn text_that_looks_like_toml_never_panics(
        text in "([a-z_]{1,16} = |\"[^\"\\n]{0,12}\"|[0-9.e+-]{1,8}|true|\\[\\[?[a-z_]{1,12}\\]\\]?|[{},\\n ])*",
    ) {
        if let Ok(config) = Config::from_toml(&text) {
            prop_assert_eq!(Config::from_toml(&config.to_toml()), Ok(config));
        }
    }

    #[test]
    fn every_valid_config_imports_as_it_was_exported(config in valid_config()) {
        prop_assert_eq!(config.validate(), Ok(()));
        let exported = config.to_toml();
        prop_assert_eq!(Config::from_toml(&exported), Ok(config), "exported as {}", exported);
    }
}
