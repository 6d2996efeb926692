use super::*;
use crate::config::{Peer, PeerKind};

#[test]
fn toml_round_trips_with_peers() {
    let mut config = Config::default();
    config.peers.push(Peer {
        name: "squid".into(),
        host: "10.0.0.2".into(),
        ..Peer::default()
    });
    config.set("parents", "a:1; b:2;").unwrap();
    let text = config.to_toml();
    assert_eq!(Config::from_toml(&text).unwrap(), config);
    let Err(ConfigFileError::Invalid(bad)) = Config::from_toml("http_port = 0") else {
        panic!("http_port = 0 must be refused by validation");
    };
    assert_eq!(bad.0[0].key, "http_port");
    let unknown = Config::from_toml("colour = \"red\"").unwrap_err();
    assert!(unknown.to_string().contains("colour"), "{unknown}");
}

#[test]
fn line_and_column_count_from_one_in_characters() {
    assert_eq!(line_and_column("a = 1\nbb = 2", 0), (1, 1));
    assert_eq!(line_and_column("a = 1\nbb = 2", 6), (2, 1));
    assert_eq!(line_and_column("a = 1\nbb = 2", 11), (2, 6));
    assert_eq!(line_and_column("v = \"é\" x", 9), (1, 9));
    assert_eq!(line_and_column("a", 7), (1, 2));
}

#[test]
fn a_merged_file_changes_only_what_it_holds() {
    let mut before = Config::default();
    before.set("icp_port", "4827").unwrap();
    before.set("parents", "a:1;").unwrap();
    before.peers.push(Peer {
        name: "north".into(),
        host: "10.0.0.1".into(),
        kind: PeerKind::Parent,
        ..Peer::default()
    });
    let after = before.merged_toml("http_port = 18529\n").unwrap();
    assert_eq!(after.diff(&before), ["http_port: 3128 → 18529"]);
    let emptied = before.merged_toml("peers = []\n").unwrap();
    assert_eq!(emptied.diff(&before), ["peer north removed"]);
    let replaced = Config::from_toml("http_port = 18529\n").unwrap();
    assert_eq!(replaced.icp_port, 3130);
    assert!(replaced.peers.is_empty());
}

#[test]
fn a_bad_file_names_line_column_and_key() {
    let config = Config::default();
    let text = "icp_port = 3131\nhttp_port = \"abc\"\n";
    let Err(ConfigFileError::Unreadable(fault)) = config.merged_toml(text) else {
        panic!("a string for http_port must be refused");
    };
    assert_eq!((fault.line, fault.column), (2, Some(13)));
    assert_eq!(fault.key.as_deref(), Some("http_port"));
    assert!(fault.message.contains("expected u16"), "{fault}");
    assert!(
        fault
            .to_string()
            .starts_with("line 2, column 13, http_port: "),
        "{fault}"
    );

    let peer = "[[peers]]\nname = \"p\"\nhost = \"h\"\ntype = \"aunt\"\n";
    let Err(ConfigFileError::Unreadable(fault)) = config.merged_toml(peer) else {
        panic!("an unknown peer type must be refused");
    };
    assert_eq!(
        (fault.line, fault.key.as_deref()),
        (4, Some("peers[0].type"))
    );

    let Err(ConfigFileError::Unreadable(fault)) = config.merged_toml("http_port = \n") else {
        panic!("a key without a value is not TOML");
    };
    assert_eq!((fault.line, fault.key), (1, None));

    let Err(ConfigFileError::Unreadable(fault)) = config.merged_toml("\ncolour = 1\n") else {
        panic!("an unknown key must be refused");
    };
    assert_eq!(fault.line, 2);
    assert!(fault.message.contains("colour"), "{fault}");
}
