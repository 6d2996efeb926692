//! The `canopy` command and live reloads, end to end.

mod common;

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};

use canopy_config::versions::{Db, VersionState};
use common::*;

fn fresh_object(body: &'static str) -> Response<OriginBody> {
    Response::builder()
        .header("cache-control", "max-age=300")
        .body(full(body))
        .unwrap()
}

#[tokio::test]
async fn a_new_port_is_taken_up_by_the_same_process_and_downloads_finish() {
    let origin = Origin::start(|seen| {
        if seen.path == "/slow" {
            // 20 chunks of 50 KiB over about two seconds.
            let chunks = futures_util::stream::unfold(0, |i| async move {
                if i == 20 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                let chunk = Bytes::from(vec![b'a' + (i % 26) as u8; 50 * 1024]);
                Some((Ok::<_, Infallible>(Frame::data(chunk)), i + 1))
            });
            Response::builder()
                .header("cache-control", "no-store")
                .body(StreamBody::new(chunks).boxed())
                .unwrap()
        } else {
            fresh_object("fast")
        }
    })
    .await;
    let proxy = Canopy::start(&[]).await;
    let pid = proxy.status().await.unwrap().pid;
    let old_addr = proxy.addr;
    let slow_url = origin.url("/slow");
    let download =
        tokio::spawn(async move { request_via(old_addr, None, "GET", &slow_url, &[]).await });
    wait_for(
        "the slow download to start",
        Duration::from_secs(10),
        || async { origin.count("/slow") == 1 },
    )
    .await;

    let new_port = free_port();
    let set = proxy.cli(&["config", "set", "http_port", &new_port.to_string()]);
    assert!(set.status.success(), "{}", stderr(&set));
    assert!(stdout(&set).contains(&format!("http_port: {} → {new_port}", old_addr.port())));
    let reload = proxy.cli(&["reload"]);
    assert!(reload.status.success(), "{}", stderr(&reload));
    assert!(
        stdout(&reload).contains("applied in"),
        "{}",
        stdout(&reload)
    );

    let status = proxy.status().await.unwrap();
    assert_eq!(status.pid, pid);
    assert_eq!(status.http_listen, format!("127.0.0.1:{new_port}"));
    let new_addr = std::net::SocketAddr::from(([127, 0, 0, 1], new_port));
    let fast = request_via(new_addr, None, "GET", &origin.url("/fast"), &[])
        .await
        .unwrap();
    assert_eq!(fast.text(), "fast");
    assert!(
        request_via(old_addr, None, "GET", &origin.url("/fast"), &[])
            .await
            .is_err()
    );

    let slow = download.await.unwrap().expect("slow download");
    assert_eq!(slow.status, StatusCode::OK);
    assert_eq!(slow.body.len(), 20 * 50 * 1024);
    for (i, chunk) in slow.body.chunks(50 * 1024).enumerate() {
        assert!(
            chunk.iter().all(|&b| b == b'a' + (i % 26) as u8),
            "chunk {i} intact"
        );
    }
}

#[tokio::test]
async fn a_bad_value_is_refused_with_a_clear_message_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let before = canopy_cli(dir.path(), &["config", "export"]);
    assert!(before.status.success());
    let bad = canopy_cli(dir.path(), &["config", "set", "cache_mem", "banana"]);
    assert_eq!(bad.status.code(), Some(2));
    let message = stderr(&bad);
    assert!(message.contains("cache_mem"), "{message}");
    assert!(message.contains("banana"), "{message}");
    assert!(message.contains("expected a size"), "{message}");
    let unknown = canopy_cli(dir.path(), &["config", "set", "colour", "red"]);
    assert!(stderr(&unknown).contains("unknown setting"));
    let group = canopy_cli(
        dir.path(),
        &["config", "set", "icp_multicast_group", "10.1.2.3"],
    );
    assert!(stderr(&group).contains("224.0.0.0/4"));
    let after = canopy_cli(dir.path(), &["config", "export"]);
    assert_eq!(stdout(&before), stdout(&after));
    let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
    assert_eq!(db.latest().await.unwrap().id, 1);
}

#[tokio::test]
async fn config_export_and_import_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let set = canopy_cli(
        dir.path(),
        &["config", "set", "parents", "p1:3128; p2:8080;"],
    );
    assert!(set.status.success(), "{}", stderr(&set));
    assert_eq!(
        stdout(&canopy_cli(dir.path(), &["config", "get", "parents"])).trim(),
        "p1:3128; p2:8080;"
    );
    let exported = stdout(&canopy_cli(dir.path(), &["config", "export"]));
    let other = tempfile::tempdir().unwrap();
    let file = other.path().join("canopy.toml");
    std::fs::write(&file, &exported).unwrap();
    let import = canopy_cli(other.path(), &["config", "import", file.to_str().unwrap()]);
    assert!(import.status.success(), "{}", stderr(&import));
    assert_eq!(
        stdout(&canopy_cli(other.path(), &["config", "export"])),
        exported
    );
    std::fs::write(&file, exported.replace("http_port = 3128", "http_port = 0")).unwrap();
    let bad = canopy_cli(other.path(), &["config", "import", file.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("http_port"), "{}", stderr(&bad));
}

#[tokio::test]
async fn garbage_on_the_control_socket_gets_an_error_and_the_proxy_serves_on() {
    let origin = Origin::start(|_| fresh_object("still here")).await;
    let proxy = Canopy::start(&[]).await;
    let mut stream = UnixStream::connect(proxy.control_path()).unwrap();
    stream.write_all(b"\x00\xffnot json at all\n").unwrap();
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["ok"], false);
    assert!(reply["error"]
        .as_str()
        .unwrap()
        .contains("cannot read request"));
    assert_eq!(proxy.get(&origin.url("/")).await.text(), "still here");
    assert!(proxy.status().await.is_ok());
}

#[tokio::test]
async fn a_version_that_cannot_be_applied_is_rejected_and_the_old_one_stays() {
    let origin = Origin::start(|_| fresh_object("old settings")).await;
    let proxy = Canopy::start(&[]).await;
    let before = proxy.status().await.unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    assert!(proxy
        .cli(&["config", "set", "http_port", &taken_port])
        .status
        .success());
    let reload = proxy.cli(&["reload"]);
    assert!(!reload.status.success());
    let message = stderr(&reload);
    assert!(message.contains("rejected"), "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{taken_port}")),
        "{message}"
    );
    assert!(
        message.contains(&format!("version {} stays in force", before.config_version)),
        "{message}"
    );
    let after = proxy.status().await.unwrap();
    assert_eq!(after.config_version, before.config_version);
    assert_eq!(
        after.rejected_version.as_ref().map(|r| r.id),
        Some(before.config_version + 1)
    );
    assert_eq!(proxy.get(&origin.url("/")).await.text(), "old settings");
    let db = Db::open(&proxy.data_dir().join("canopy.db")).await.unwrap();
    assert_eq!(db.latest().await.unwrap().state, VersionState::Rejected);
}

#[tokio::test]
async fn commands_say_plainly_when_the_proxy_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    for command in [&["reload"][..], &["status"], &["stats"]] {
        let output = canopy_cli(dir.path(), command);
        assert!(!output.status.success());
        assert!(
            stderr(&output).contains("the proxy is not running"),
            "{}",
            stderr(&output)
        );
    }
}

/// `canopy run` on a fresh data dir with free ports, once it has printed its addresses
/// (its stdout is closed then, which it must take in its stride).
struct Running {
    dir: tempfile::TempDir,
    child: std::process::Child,
    printed: String,
    port: String,
    manager: String,
}

fn canopy_run() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let manager = format!("127.0.0.1:{}", free_port());
    for (key, value) in [
        ("http_port", port.as_str()),
        ("bind_address", "127.0.0.1"),
        ("manager_listen", manager.as_str()),
    ] {
        assert!(canopy_cli(dir.path(), &["config", "set", key, value])
            .status
            .success());
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    while !printed.contains("Ctrl-C") {
        let line = lines
            .next()
            .expect("canopy run printed its addresses")
            .unwrap();
        printed.push_str(&line);
        printed.push('\n');
    }
    Running {
        dir,
        child,
        printed,
        port,
        manager,
    }
}

#[tokio::test]
async fn canopy_run_starts_both_processes_and_stops_them_on_sigterm() {
    let Running {
        dir,
        child: mut run,
        printed,
        port,
        manager,
        ..
    } = canopy_run();
    assert!(
        printed.contains(&format!("Proxy:   127.0.0.1:{port}")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("Console: http://{manager}/")),
        "{printed}"
    );
    let status = canopy_cli(dir.path(), &["status"]);
    assert!(
        stdout(&status).contains("config version in force"),
        "{}",
        stderr(&status)
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exit = run.wait().unwrap();
    assert!(exit.success(), "{exit}");
    let after = canopy_cli(dir.path(), &["status"]);
    assert!(stderr(&after).contains("not running"));
}

/// `canopy stats | head -1`: a reader that goes away ends the command quietly, as it ends
/// any Unix tool, rather than with a panic about a broken pipe.
#[tokio::test]
async fn a_reader_that_goes_away_ends_the_output_without_a_panic() {
    let proxy = Canopy::start(&[]).await;
    for args in [&["stats"][..], &["cache", "stats"], &["peer", "list"]] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let output = Command::new(env!("CARGO_BIN_EXE_canopy"))
            .arg("--data-dir")
            .arg(proxy.data_dir())
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run canopy");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "canopy {args:?}: {stderr}");
        assert_ne!(output.status.code(), Some(101), "canopy {args:?}: {stderr}");
    }
}
