use super::*;

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
