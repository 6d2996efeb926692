//! Which config version runs, and which one edits start from, when versions fail.

mod common;

use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use canopy_config::versions::{Db, VersionState};
use common::*;

async fn db_of(proxy: &Canopy) -> Db {
    Db::open(&proxy.data_dir().join("canopy.db")).await.unwrap()
}

/// Versions 3, 4 and 5 were each in force in turn; at the restart their ports are taken.
/// The proxy must not walk back to version 2, settings the admin changed away from.
#[tokio::test]
async fn a_start_never_walks_back_past_the_version_last_in_force() {
    let mut proxy = Canopy::start(&[]).await;
    assert_eq!(proxy.status().await.unwrap().config_version, 2);
    let mut ports = Vec::new();
    for _ in 3..=5 {
        let port = free_port().to_string();
        proxy.reconfigure(&[("http_port", &port)]);
        ports.push(port);
    }
    assert_eq!(proxy.status().await.unwrap().config_version, 5);
    proxy.kill();
    let _taken: Vec<TcpListener> = ports
        .iter()
        .map(|p| TcpListener::bind(format!("127.0.0.1:{p}")).unwrap())
        .collect();
    proxy.launch();
    let exit = proxy.exited(Duration::from_secs(20)).await;
    let log = proxy.log();
    assert!(
        exit.is_some_and(|e| !e.success()),
        "the proxy started on an older version: {log}"
    );
    assert!(log.contains("version 5"), "{log}");
    assert!(
        log.contains(&format!("cannot listen on 127.0.0.1:{}", ports[2])),
        "{log}"
    );
    assert!(log.contains("refusing to start"), "{log}");
    let db = db_of(&proxy).await;
    assert_eq!(db.get(2).await.unwrap().state, VersionState::Applied);
    assert_eq!(db.get(5).await.unwrap().state, VersionState::Applied);
    assert_eq!(db.get(4).await.unwrap().state, VersionState::Applied);
}

/// Saved while the proxy was down: version 3 (fine) and version 4 (port taken). The proxy
/// runs version 2, the one last in force, not the never-tried version 3.
#[tokio::test]
async fn a_bad_newest_version_falls_back_to_the_one_last_in_force_only() {
    let mut proxy = Canopy::start(&[]).await;
    proxy.kill();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    for (key, value) in [("visible_name", "in-between"), ("http_port", &taken_port)] {
        let set = proxy.cli(&["config", "set", key, value]);
        assert!(set.status.success(), "{}", stderr(&set));
    }
    proxy.restart().await;
    let status = proxy.status().await.unwrap();
    assert_eq!(status.config_version, 2, "{}", proxy.log());
    let rejected = status.rejected_version.expect("version 4 rejected");
    assert_eq!(rejected.id, 4);
    assert!(rejected.reason.contains(&taken_port), "{}", rejected.reason);
    let db = db_of(&proxy).await;
    assert_eq!(db.get(3).await.unwrap().state, VersionState::Saved);
    let log = proxy.log();
    assert!(log.contains("version 4"), "{log}");
}

/// Nothing was ever in force and the newest version cannot be applied: no start, and a
/// plain reason in the terminal.
#[tokio::test]
async fn with_nothing_ever_in_force_a_bad_version_stops_the_start() {
    let mut proxy = Canopy::start(&[]).await;
    proxy.kill();
    let dir = proxy.data_dir().to_owned();
    std::fs::remove_file(dir.join("canopy.db")).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("canopy.db{suffix}")));
    }
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    for (key, value) in [("bind_address", "127.0.0.1"), ("http_port", &taken_port)] {
        let set = proxy.cli(&["config", "set", key, value]);
        assert!(set.status.success(), "{}", stderr(&set));
    }
    proxy.launch();
    let exit = proxy.exited(Duration::from_secs(20)).await;
    let log = proxy.log();
    assert!(exit.is_some_and(|e| !e.success()), "started anyway: {log}");
    assert!(log.contains("version 3"), "{log}");
    assert!(
        log.contains(&format!("cannot listen on 127.0.0.1:{taken_port}")),
        "{log}"
    );
    assert!(log.contains("no version was ever in force"), "{log}");
    let status = proxy.cli(&["status"]);
    assert!(
        stderr(&status).contains("version 3 was rejected"),
        "{}",
        stderr(&status)
    );
}

/// After a rejected version (ICP port taken), edits start from the version in force.
#[tokio::test]
async fn edits_after_a_rejected_version_build_on_the_version_in_force() {
    let icp = free_udp_port().to_string();
    let proxy = Canopy::start(&[("icp_mode", "receive"), ("icp_port", &icp)]).await;
    let held = UdpSocket::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port().to_string();
    let set = proxy.cli(&["config", "set", "icp_port", &held_port]);
    assert!(set.status.success(), "{}", stderr(&set));
    assert!(!proxy.cli(&["reload"]).status.success());
    let db = db_of(&proxy).await;
    assert_eq!(db.get(3).await.unwrap().state, VersionState::Rejected);

    let get = proxy.cli(&["config", "get", "icp_port"]);
    assert_eq!(stdout(&get).trim(), icp);
    let list = stdout(&proxy.cli(&["config", "list"]));
    assert!(list.contains(&format!("icp_port = {icp}")), "{list}");
    assert!(
        list.contains("version 3 was rejected: ") && list.contains("; showing version 2 in force"),
        "{list}"
    );

    proxy.reconfigure(&[("visible_name", "renamed")]);
    let status = proxy.status().await.unwrap();
    assert_eq!(status.config_version, 4);
    assert!(status.rejected_version.is_none());
    let v4 = db.get(4).await.unwrap();
    assert_eq!(v4.config.icp_port.to_string(), icp);
    assert_eq!(v4.config.visible_name, "renamed");
    assert_eq!(
        stdout(&proxy.cli(&["config", "get", "visible_name"])).trim(),
        "renamed"
    );
}

/// `canopy config history`, `diff` and `restore`: the console's History from the shell.
#[tokio::test]
async fn history_diff_and_restore_from_the_command_line() {
    let proxy = Canopy::start(&[]).await;
    proxy.reconfigure(&[("visible_name", "second")]);
    proxy.reconfigure(&[("icp_port", "3999")]);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    assert!(proxy
        .cli(&["config", "set", "http_port", &taken_port])
        .status
        .success());
    assert!(!proxy.cli(&["reload"]).status.success());

    let history = stdout(&proxy.cli(&["config", "history"]));
    assert!(
        history.contains("visible_name: canopy-under-test → second"),
        "{history}"
    );
    assert!(history.contains("icp_port: 3130 → 3999"), "{history}");
    assert!(history.contains("*   4 "), "version 4 in force: {history}");
    assert!(
        history.contains(&format!("cannot listen on 127.0.0.1:{taken_port}")),
        "the rejected version and why: {history}"
    );

    let diff = stdout(&proxy.cli(&["config", "diff", "2", "4"]));
    assert_eq!(
        diff.lines().collect::<Vec<_>>(),
        [
            "visible_name: canopy-under-test → second",
            "icp_port: 3130 → 3999"
        ]
    );
    let missing = proxy.cli(&["config", "diff", "2", "99"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("there is no config version 99"));

    let restored = proxy.cli(&["config", "restore", "2"]);
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert!(stdout(&restored).contains("config version 6 saved: restored version 2"));
    assert!(stdout(&restored).contains("config version 6 applied"));
    assert_eq!(proxy.status().await.unwrap().config_version, 6);
    assert_eq!(
        stdout(&proxy.cli(&["config", "get", "visible_name"])).trim(),
        "canopy-under-test"
    );
    let history = stdout(&proxy.cli(&["config", "history", "--limit", "1"]));
    assert!(history.contains("restored version 2"), "{history}");

    let again = proxy.cli(&["config", "restore", "5"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains(&format!("cannot listen on 127.0.0.1:{taken_port}")),
        "{}",
        stderr(&again)
    );
    assert_eq!(proxy.status().await.unwrap().config_version, 6);
}
