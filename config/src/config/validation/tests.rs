use super::*;
use crate::config::peers::Peer;

#[test]
fn visible_name_is_a_host_name() {
    let mut config = Config::default();
    for good in ["edge", "cache-1.example.net", "Proxy_2"] {
        config.set("visible_name", good).unwrap();
    }
    for bad in [
        "", "a b", "a;b", "x\"y", "<b>", "a,b", "(a)", "-a", ".a", "é",
    ] {
        let err = config.set("visible_name", bad).unwrap_err();
        assert_eq!(err.0[0].key, "visible_name");
        assert_eq!(err.0[0].value, bad);
        assert!(err.0[0].message.contains("letters, digits"), "{err}");
    }
    assert!(config.set("visible_name", &"a".repeat(254)).is_err());
    assert_eq!(config.visible_name, "Proxy_2");
}

#[test]
fn manager_hosts_are_names_without_ports() {
    let mut config = Config::default();
    assert!(config.manager_hosts.0.is_empty());
    config
        .set("manager_hosts", "Console.Example.com, canopy")
        .unwrap();
    assert_eq!(
        config.get("manager_hosts").unwrap(),
        "console.example.com, canopy"
    );
    assert!(config.manager_hosts.contains("CONSOLE.example.com"));
    assert!(!config.manager_hosts.contains("example.com"));
    for bad in ["console.example.com:8080", "[::1]", "a/b", "-a"] {
        let err = config.set("manager_hosts", bad).unwrap_err();
        assert_eq!(err.0[0].key, "manager_hosts");
        assert_eq!(err.0[0].value, bad);
        assert!(err.0[0].message.contains("not a host name"), "{err}");
    }
    config.set("manager_hosts", "").unwrap();
    assert!(config.manager_hosts.0.is_empty());
}

#[test]
fn max_object_size_is_bounded_by_the_disk_cache_and_by_memory_without_it() {
    let mut config = Config::default();
    assert!(config.disk_cache_on());
    config.set("max_object_size", "1G").unwrap();
    let err = config.set("max_object_size", "2G").unwrap_err();
    assert_eq!(err.0[0].key, "max_object_size");
    assert_eq!(err.0[0].value, "2G");
    assert!(err.0[0].message.contains("cache_dir_size (1G)"), "{err}");
    for off in [("cache_dir_size", "0"), ("cache_dir", "")] {
        let mut config = Config::default();
        config.set(off.0, off.1).unwrap();
        assert!(!config.disk_cache_on());
        let err = config.set("max_object_size", "512M").unwrap_err();
        assert!(err.0[0].message.contains("cache_mem (256M)"), "{err}");
    }
}

#[test]
fn objects_kept_in_memory_fit_in_cache_mem() {
    let mut config = Config::default();
    assert_eq!(config.max_object_size_in_memory.0, 512 << 10);
    let err = config.set("max_object_size_in_memory", "300M").unwrap_err();
    assert_eq!(err.0[0].key, "max_object_size_in_memory");
    assert_eq!(err.0[0].value, "300M");
    assert!(err.0[0].message.contains("cache_mem (256M)"), "{err}");
    config.set("cache_mem", "0").unwrap();
    config.set("max_object_size_in_memory", "300M").unwrap();
}

#[test]
fn timeouts_must_be_set_and_bounded() {
    let mut config = Config::default();
    for key in [
        "client_idle_timeout_s",
        "request_timeout_s",
        "tunnel_idle_timeout_s",
    ] {
        let err = config.set(key, "0").unwrap_err();
        assert_eq!(err.0[0].key, key);
        assert!(err.0[0].message.contains("seconds"), "{err}");
    }
    assert!(config.set("client_lifetime_s", "604801").is_err());
    config.set("client_lifetime_s", "604800").unwrap();
    assert_eq!(Config::default().request_timeout_s, 60);
}

#[test]
fn this_proxy_is_refused_as_its_own_peer_or_parent() {
    let mut config = Config::default();
    config.set("bind_address", "10.0.0.1").unwrap();
    let own = Peer {
        name: "me".into(),
        host: "10.0.0.1".into(),
        ..Peer::default()
    };
    let next_door = Peer {
        name: "next-door".into(),
        host: "10.0.0.1".into(),
        http_port: 3129,
        ..Peer::default()
    };
    config.peers = vec![own, next_door];
    let errors = config.validate().unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].key, "peers.me.host");
    assert!(errors.0[0]
        .message
        .contains("10.0.0.1:3128 is this proxy's own listener"));

    let mut every_address = Config::default();
    assert!(every_address.set("parents", "localhost:3128").is_err());
    assert!(every_address.set("parents", "127.0.0.2:3128").is_err());
    every_address.set("parents", "127.0.0.2:3129").unwrap();
    every_address.set("parents", "10.9.9.9:3128").unwrap();
}

#[test]
fn two_peers_on_the_same_host_and_port_are_refused() {
    let mut config = Config {
        peers: ["a", "b"]
            .map(|name| Peer {
                name: name.into(),
                host: "Squid.Example.net".into(),
                ..Peer::default()
            })
            .to_vec(),
        ..Config::default()
    };
    config.peers[1].host = "squid.example.net".into();
    let errors = config.validate().unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].key, "peers.b.host");
    assert!(errors.0[0]
        .message
        .contains("peer a has the same host and HTTP port"));
}

#[test]
fn a_sibling_cannot_be_a_default_or_rotation_parent_and_limits_are_bounded() {
    let sibling = Peer {
        name: "sib".into(),
        host: "10.0.0.1".into(),
        default_parent: true,
        round_robin: true,
        ..Peer::default()
    };
    let parent = Peer {
        name: "par".into(),
        host: "10.0.0.2".into(),
        kind: PeerKind::Parent,
        default_parent: true,
        round_robin: true,
        connect_timeout_ms: Some(0),
        max_conn: Some(0),
        ..Peer::default()
    };
    let config = Config {
        peers: vec![sibling, parent],
        ..Config::default()
    };
    let errors = config.validate().unwrap_err();
    let said: Vec<(&str, &str, &str)> = errors
        .0
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        said,
        [
            (
                "peers.sib.default_parent",
                "true",
                "only a parent can be the default parent"
            ),
            (
                "peers.sib.round_robin",
                "true",
                "only a parent can be in the round-robin rotation"
            ),
            (
                "peers.par.connect_timeout_ms",
                "0",
                "expected 1 to 600000 milliseconds"
            ),
            (
                "peers.par.max_conn",
                "0",
                "expected at least 1 (leave it unset for no limit)"
            ),
        ]
    );
}

#[test]
fn carp_refuses_two_parents_on_one_host_as_squid_refuses_two_peers_of_one_name() {
    use crate::config::routing::{ParentRule, RoundRobin};
    let mut config = Config::default();
    config.set("parents", "p.test:3128; p.test:3129;").unwrap();
    let errors = config.set("round_robin", "carp").unwrap_err();
    assert_eq!(errors.0[0].key, "parents");
    assert_eq!(errors.0[0].value, "p.test:3129");
    assert!(errors.0[0].message.contains("host p.test is listed twice"));
    config
        .set("parents", "p.test:3128; q.test:3128|2;")
        .unwrap();
    config.set("round_robin", "carp").unwrap();
    let mut rule = ParentRule {
        dest_domain: Some("a.test".into()),
        parents: "P.test:1; p.test:2;".parse().unwrap(),
        round_robin: RoundRobin::Carp,
        ..ParentRule::default()
    };
    assert_eq!(rule.errors("parent_rules.1").len(), 1);
    rule.round_robin = RoundRobin::ConsistentHash;
    assert!(rule.errors("parent_rules.1").is_empty());
}

#[test]
fn an_inline_icp_object_fits_one_datagram() {
    let mut config = Config::default();
    assert!(!config.icp_hit_obj.0, "off by default");
    config.set("icp_hit_obj_max_bytes", "16361").unwrap();
    let errors = config.set("icp_hit_obj_max_bytes", "16362").unwrap_err();
    assert_eq!(errors.0[0].key, "icp_hit_obj_max_bytes");
    assert_eq!(errors.0[0].value, "16362");
}

#[test]
fn targeted_cache_control_is_a_list_of_field_names_in_order() {
    let mut config = Config::default();
    assert!(config.targeted_cache_control.0.is_empty());
    config
        .set(
            "targeted_cache_control",
            "Canopy-Cache-Control, CDN-Cache-Control cdn-cache-control",
        )
        .unwrap();
    assert_eq!(
        config.get("targeted_cache_control").unwrap(),
        "canopy-cache-control, cdn-cache-control"
    );
    for bad in ["cdn-cache-control:", "a/b", "x(y)"] {
        let err = config.set("targeted_cache_control", bad).unwrap_err();
        assert_eq!(err.0[0].key, "targeted_cache_control");
        assert_eq!(err.0[0].value, bad);
        assert!(err.0[0].message.contains("not a field name"), "{err}");
    }
}

#[test]
fn fleet_peering_needs_queries_for_siblings_and_no_always_direct_for_carp() {
    let mut config = Config::default();
    assert_eq!(config.fleet_peering, FleetPeering::Off);
    let err = config.set("fleet_peering", "siblings").unwrap_err();
    assert_eq!(
        (err.0[0].key.as_str(), err.0[0].value.as_str()),
        ("fleet_peering", "siblings")
    );
    assert!(err.0[0].message.contains("icp_mode"), "{err}");
    config.set("icp_mode", "send-receive").unwrap();
    config.set("fleet_peering", "siblings").unwrap();
    config.set("fleet_peering", "carp").unwrap();
    let err = config.set("always_direct", "true").unwrap_err();
    assert_eq!(err.0[0].key, "fleet_peering");
    assert!(err.0[0].message.contains("always_direct"), "{err}");
    let err = config.set("fleet_peering", "home").unwrap_err();
    assert!(err.0[0].message.contains("off, siblings or carp"), "{err}");
}
