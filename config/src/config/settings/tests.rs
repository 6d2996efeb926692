use super::*;

#[test]
fn defaults_are_valid_and_safe() {
    let config = Config::default();
    config.validate().unwrap();
    assert_eq!(config.http_port, 3128);
    assert_eq!(config.icp_port, 3130);
    assert_eq!(config.icp_mode, IcpMode::Disabled);
    assert!(config
        .allowed_clients
        .contains("127.0.0.1".parse().unwrap()));
    assert!(config
        .allowed_clients
        .contains("192.168.1.9".parse().unwrap()));
    assert!(!config.allowed_clients.contains("8.8.8.8".parse().unwrap()));
    assert_eq!(config.manager_listen.to_string(), "127.0.0.1:8080");
}

#[test]
fn set_refuses_bad_values_and_changes_nothing() {
    let mut config = Config::default();
    let err = config.set("cache_mem", "banana").unwrap_err();
    assert_eq!(err.0[0].key, "cache_mem");
    assert!(err.to_string().contains("banana"), "{err}");
    assert_eq!(config, Config::default());
    assert!(config.set("http_port", "0").is_err());
    assert!(config.set("http_port", "70000").is_err());
    assert!(config.set("icp_multicast_group", "10.0.0.1").is_err());
    assert!(config.set("icp_mode", "sometimes").is_err());
    let unknown = config.set("no_such_key", "1").unwrap_err();
    assert!(unknown.to_string().contains("unknown setting"));
    assert_eq!(config, Config::default());
    config.set("http_port", "8081").unwrap();
    assert_eq!(config.get("http_port").unwrap(), "8081");
}

#[test]
fn set_all_reports_every_bad_field() {
    let mut config = Config::default();
    let err = config
        .set_all([
            ("http_port", "0"),
            ("icp_port", "x"),
            ("icp_mode", "receive"),
        ])
        .unwrap_err();
    let keys: Vec<&str> = err.0.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["icp_port", "http_port"]);
    assert_eq!(config, Config::default());
}

#[test]
fn every_setting_round_trips_through_text() {
    let config = Config::default();
    for setting in SETTINGS {
        let text = config.get(setting.key).unwrap();
        let mut copy = config.clone();
        copy.set(setting.key, &text)
            .unwrap_or_else(|e| panic!("{}: {e}", setting.key));
        assert_eq!(copy, config, "{}", setting.key);
    }
}

#[test]
fn diff_names_each_change() {
    let before = Config::default();
    let mut after = before.clone();
    after.set("http_port", "3129").unwrap();
    assert_eq!(after.diff(&before), ["http_port: 3128 → 3129"]);
}

#[test]
fn a_bad_port_list_names_the_setting_and_keeps_the_default() {
    let mut config = Config::default();
    let err = config.set("safe_ports", "80, 9-1").unwrap_err();
    assert_eq!(err.0[0].key, "safe_ports");
    assert!(err.to_string().contains("9-1"), "{err}");
    assert!(config.safe_ports.contains(8080) && !config.safe_ports.contains(25));
    assert_eq!(config.ssl_ports.to_string(), "443");
}

#[test]
fn every_group_has_settings_and_lists_are_edited_one_per_line() {
    for group in Group::ALL {
        assert!(
            group.settings().next().is_some(),
            "{group:?} has no setting"
        );
        assert_eq!(Group::from_slug(group.slug()), Some(group));
    }
    let control = |key: &str| SETTINGS.iter().find(|s| s.key == key).unwrap().control;
    for key in [
        "allowed_clients",
        "icp_allowed_clients",
        "purge_allowed_clients",
    ] {
        assert_eq!(control(key), Control::List, "{key}");
    }
    assert_eq!(control("never_direct"), Control::Checkbox);
    assert_eq!(control("http_port"), Control::Number);
    assert!(matches!(control("icp_mode"), Control::Choice(modes) if modes.len() == 3));
}

#[test]
fn a_number_that_does_not_parse_says_what_was_expected() {
    let mut config = Config::default();
    let port = config.set("http_port", "70000").unwrap_err();
    assert_eq!(port.0[0].message, "expected a port number from 1 to 65535");
    assert_eq!(port.0[0].value, "70000");
    let ttl = config.set("icp_multicast_ttl", "300").unwrap_err();
    assert_eq!(ttl.0[0].message, "expected a whole number from 0 to 255");
    let listen = config.set("manager_listen", "localhost").unwrap_err();
    assert!(listen.0[0].message.contains("127.0.0.1:8080"), "{listen}");
}
