//! The console's accounts from the `canopy` command: `admin set-password` reads stdin, and
//! the first `canopy run` creates `admin` and prints its password once.

mod common;

use std::process::Stdio;
use std::time::Duration;

use canopy_config::versions::Db;
use canopy_manager::accounts;
use common::{free_port, wait_for};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};

fn set_password(data_dir: &std::path::Path, user: &str, stdin: &str) -> std::process::Output {
    common::canopy_cli_with_stdin(data_dir, &["admin", "set-password", user], stdin)
}

#[tokio::test]
async fn set_password_reads_stdin_and_refuses_what_it_cannot_use() {
    let dir = tempfile::tempdir().expect("dir");
    let ok = set_password(dir.path(), "alice", "a fine password\n");
    assert!(ok.status.success(), "{}", common::stderr(&ok));
    let db = Db::open(&dir.path().join("canopy.db")).await.expect("db");
    assert!(accounts::verify_password(&db, "alice", "a fine password")
        .await
        .expect("check"));
    for (stdin, complaint) in [("", "no password"), ("short\n", "at least 8")] {
        let refused = set_password(dir.path(), "alice", stdin);
        assert_eq!(refused.status.code(), Some(2), "{stdin:?}");
        assert!(
            common::stderr(&refused).contains(complaint),
            "{}",
            common::stderr(&refused)
        );
    }
    assert!(accounts::verify_password(&db, "alice", "a fine password")
        .await
        .expect("check"));
}

#[tokio::test]
async fn the_first_canopy_run_prints_the_admin_password_once() {
    let dir = tempfile::tempdir().expect("dir");
    let console_port = free_port();
    let db = Db::open(&dir.path().join("canopy.db")).await.expect("db");
    let mut config = db.latest().await.expect("latest").config;
    config
        .set_all([
            ("http_port", free_port().to_string().as_str()),
            ("bind_address", "127.0.0.1"),
            (
                "manager_listen",
                format!("127.0.0.1:{console_port}").as_str(),
            ),
        ])
        .expect("settings");
    db.save_change(&config, "test", None).await.expect("saved");
    let mut run = tokio::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("canopy run");
    let mut lines = BufReader::new(run.stdout.take().expect("stdout")).lines();
    let password = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(rest) = line.strip_prefix("Console account created: admin, password ") {
                return rest.split_whitespace().next().map(str::to_owned);
            }
        }
        None
    })
    .await
    .expect("canopy run printed in time")
    .expect("a password line");
    assert!(accounts::verify_password(&db, "admin", &password)
        .await
        .expect("check"));
    wait_for(
        "the console to listen",
        Duration::from_secs(20),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", console_port))
                .await
                .is_ok()
        },
    )
    .await;
    let pid = Pid::from_raw(run.id().expect("pid") as i32);
    kill(pid, Signal::SIGTERM).expect("stop canopy run");
    let exited = tokio::time::timeout(Duration::from_secs(20), run.wait())
        .await
        .expect("canopy run stopped")
        .expect("exit status");
    assert!(exited.success(), "{exited}");
    assert_eq!(
        accounts::ensure_admin(&db).await.expect("ensure"),
        None,
        "a second run creates nothing and prints nothing"
    );
}
