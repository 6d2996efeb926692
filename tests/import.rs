//! `canopy config import`: a file merges into the current config unless `--replace` says
//! otherwise, `--dry-run` only shows the change, and a bad file names its line and key.

mod common;

use std::path::{Path, PathBuf};

use canopy_config::versions::Db;
use common::*;

/// A data dir whose config has two peers, two rules and a few settings away from defaults.
fn configured() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let steps: [&[&str]; 7] = [
        &["peer", "add", "north", "10.0.0.1", "--type", "parent"],
        &["peer", "add", "south", "10.0.0.2", "--type", "sibling"],
        &[
            "rule",
            "add",
            "--dest-domain",
            "example.com",
            "--parents",
            "p1:3128;",
        ],
        &[
            "rule",
            "add",
            "--dest-domain",
            "example.org",
            "--parents",
            "p2:3128;",
        ],
        &["config", "set", "visible_name", "edge-7"],
        &["config", "set", "cache_mem", "64M"],
        &["config", "set", "icp_port", "4827"],
    ];
    for args in steps {
        let done = canopy_cli(dir.path(), args);
        assert!(done.status.success(), "{args:?}: {}", stderr(&done));
    }
    dir
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("import.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn export(dir: &Path) -> String {
    stdout(&canopy_cli(dir, &["config", "export"]))
}

async fn latest_id(dir: &Path) -> i64 {
    let db = Db::open(&dir.join("canopy.db")).await.unwrap();
    db.latest().await.unwrap().id
}

#[tokio::test]
async fn importing_one_setting_changes_only_that_setting() {
    let dir = configured();
    let before = export(dir.path());
    let file = write(dir.path(), "http_port = 18529\n");
    let import = canopy_cli(dir.path(), &["config", "import", file.to_str().unwrap()]);
    assert!(import.status.success(), "{}", stderr(&import));
    let after = export(dir.path());
    assert_eq!(
        after,
        before.replacen("http_port = 3128", "http_port = 18529", 1),
        "only http_port may change"
    );
    assert!(after.contains("edge-7"), "{after}");
    let peers = stdout(&canopy_cli(dir.path(), &["peer", "list"]));
    assert!(
        peers.contains("north") && peers.contains("south"),
        "{peers}"
    );
    let rules = stdout(&canopy_cli(dir.path(), &["rule", "list"]));
    assert!(
        rules.contains("example.com") && rules.contains("example.org"),
        "{rules}"
    );
}

#[tokio::test]
async fn replace_resets_what_the_file_leaves_out() {
    let dir = configured();
    let file = write(dir.path(), "http_port = 18529\n");
    let import = canopy_cli(
        dir.path(),
        &["config", "import", "--replace", file.to_str().unwrap()],
    );
    assert!(import.status.success(), "{}", stderr(&import));
    let after = export(dir.path());
    assert!(after.contains("http_port = 18529"), "{after}");
    assert!(after.contains("icp_port = 3130"), "{after}");
    assert!(!after.contains("edge-7"), "{after}");
    assert!(!after.contains("north"), "{after}");
    assert!(!after.contains("example.com"), "{after}");
}

#[tokio::test]
async fn dry_run_prints_the_change_and_saves_nothing() {
    let dir = configured();
    let before = export(dir.path());
    let id = latest_id(dir.path()).await;
    let file = write(dir.path(), "http_port = 18529\n");
    let dry = canopy_cli(
        dir.path(),
        &["config", "import", "--dry-run", file.to_str().unwrap()],
    );
    assert!(dry.status.success(), "{}", stderr(&dry));
    let shown = stdout(&dry);
    assert!(shown.contains("http_port: 3128 → 18529"), "{shown}");
    assert!(!shown.contains("peer"), "{shown}");
    let replace = canopy_cli(
        dir.path(),
        &[
            "config",
            "import",
            "--dry-run",
            "--replace",
            file.to_str().unwrap(),
        ],
    );
    let shown = stdout(&replace);
    assert!(shown.contains("peer north removed"), "{shown}");
    assert!(shown.contains("parent rules: 2 → 0"), "{shown}");
    assert_eq!(export(dir.path()), before);
    assert_eq!(latest_id(dir.path()).await, id);
}

#[tokio::test]
async fn a_bad_value_names_its_line_column_and_key_and_saves_nothing() {
    let dir = configured();
    let before = export(dir.path());
    let id = latest_id(dir.path()).await;
    let file = write(dir.path(), "cache_mem = \"128M\"\nhttp_port = \"abc\"\n");
    let bad = canopy_cli(dir.path(), &["config", "import", file.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    let message = stderr(&bad);
    assert!(message.contains("line 2, column 13"), "{message}");
    assert!(message.contains("http_port"), "{message}");
    assert!(message.contains("expected u16"), "{message}");
    assert!(message.contains("nothing was changed"), "{message}");
    let peer = write(
        dir.path(),
        "[[peers]]\nname = \"east\"\nhost = \"10.0.0.3\"\ntype = \"parent\"\nhttp_port = 3128\nicp_port = -1\n",
    );
    let bad = canopy_cli(dir.path(), &["config", "import", peer.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    let message = stderr(&bad);
    assert!(message.contains("line 6, column 12"), "{message}");
    assert!(message.contains("peers[0].icp_port"), "{message}");
    assert_eq!(export(dir.path()), before);
    assert_eq!(latest_id(dir.path()).await, id);
}
