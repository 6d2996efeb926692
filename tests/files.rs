//! Canopy's files belong to the account that runs it: another local user (`nobody`) can
//! neither list the data dir nor read the database, its WAL and shared memory, or the access
//! log, and the database never holds a session id another user could replay. An older
//! installation with readable files is tightened when Canopy starts.
//!
//! These tests switch to a real second user with util-linux `setpriv`, which needs root;
//! CI runs as root and must run them.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::{canopy_cli, free_port, full, stderr, wait_for, Origin};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const PASSWORD: &str = "a long console password";

/// Whether this test can act as a second user; under `CI=true` it must.
fn can_switch_users() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let setpriv = Path::new("/usr/bin/setpriv").exists();
    if !root || !setpriv {
        let why = if root {
            "util-linux setpriv is missing (apt-get install -y util-linux)"
        } else {
            "this test must run as root to switch to the user nobody"
        };
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why}; CI must run the file permission tests"
        );
        eprintln!("SKIPPED: {why}; the file permission test did NOT run");
    }
    root && setpriv
}

/// Runs `program args` as the user `nobody` (group `nogroup`, no other groups).
fn as_nobody(program: &str, args: &[&Path]) -> std::process::Output {
    Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            program,
        ])
        .args(args)
        .output()
        .expect("run setpriv")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// A folder every user may enter, holding the data dir, so that only the data dir's own
/// mode (and its files') keeps `nobody` out.
fn open_parent() -> tempfile::TempDir {
    let parent = tempfile::tempdir().expect("temp dir");
    set_mode(parent.path(), 0o755);
    parent
}

struct Installation {
    data: PathBuf,
    console: u16,
    proxy: u16,
}

impl Installation {
    fn file(&self, name: &str) -> PathBuf {
        self.data.join(name)
    }

    /// Settings for loopback ports and the admin's password, through the `canopy` command.
    fn configure(data: PathBuf) -> Installation {
        let installation = Installation {
            data,
            console: free_port(),
            proxy: free_port(),
        };
        for (key, value) in [
            ("http_port", installation.proxy.to_string()),
            ("bind_address", "127.0.0.1".to_owned()),
            (
                "manager_listen",
                format!("127.0.0.1:{}", installation.console),
            ),
        ] {
            let set = canopy_cli(&installation.data, &["config", "set", key, &value]);
            assert!(set.status.success(), "config set {key}: {}", stderr(&set));
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_canopy"))
            .arg("--data-dir")
            .arg(&installation.data)
            .args(["admin", "set-password", "admin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run canopy admin set-password");
        std::io::Write::write_all(
            &mut child.stdin.take().expect("stdin"),
            format!("{PASSWORD}\n").as_bytes(),
        )
        .expect("write the password");
        let set = child.wait_with_output().expect("set-password output");
        assert!(set.status.success(), "set-password: {}", stderr(&set));
        installation
    }

    /// `canopy run`, its terminal output in `run.log` beside the data dir; waits for the
    /// console to listen.
    async fn run(&self) -> Running {
        let log_path = self.data.with_file_name("run.log");
        let log = std::fs::File::create(&log_path).expect("run log");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
            .arg("--data-dir")
            .arg(&self.data)
            .arg("run")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("canopy run");
        let console = self.console;
        wait_for(
            "the console to listen",
            Duration::from_secs(30),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", console))
                    .await
                    .is_ok()
            },
        )
        .await;
        Running { child, log_path }
    }
}

struct Running {
    child: tokio::process::Child,
    log_path: PathBuf,
}

impl Running {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM canopy run");
        }
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("canopy run stopped")
            .expect("exit status");
    }
}

/// One request to the console; returns the status and every `Set-Cookie` value.
async fn console(
    port: u16,
    method: &str,
    path: &str,
    cookie: &str,
    form: &str,
) -> (StatusCode, Vec<String>) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the console");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"));
    if !cookie.is_empty() {
        request = request.header("cookie", cookie);
    }
    if !form.is_empty() {
        request = request.header("content-type", "application/x-www-form-urlencoded");
    }
    let response: Response<_> = sender
        .send_request(
            request
                .body(Full::new(Bytes::from(form.to_owned())))
                .expect("request"),
        )
        .await
        .expect("console answer");
    let status = response.status();
    let cookies = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let _ = response.into_body().collect().await;
    (status, cookies)
}

/// The value `name` is set to among `cookies`.
fn cookie_value(cookies: &[String], name: &str) -> String {
    cookies
        .iter()
        .filter_map(|c| c.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_owned())
        .unwrap_or_else(|| panic!("no {name} cookie among {cookies:?}"))
}

/// Logs in as the admin through the login form; returns the session cookie's value.
async fn log_in(port: u16) -> String {
    let (status, cookies) = console(port, "GET", "/login", "", "").await;
    assert_eq!(status, StatusCode::OK);
    let token = cookie_value(&cookies, "canopy_login");
    let form = format!("csrf={token}&user=admin&password={}&next=%2F", {
        PASSWORD.replace(' ', "+")
    });
    let (status, cookies) = console(
        port,
        "POST",
        "/login",
        &format!("canopy_login={token}"),
        &form,
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the login is accepted");
    cookie_value(&cookies, "canopy_session")
}

/// The data dir, the database and its WAL and shared memory, and the access log: modes
/// as promised, and `nobody` can neither list the dir nor read a file, even when the dir
/// is opened up.
fn assert_private(installation: &Installation) {
    let files = ["canopy.db", "canopy.db-wal", "canopy.db-shm", "access.log"];
    assert_eq!(
        format!("{:o}", mode(&installation.data)),
        "700",
        "the data dir's mode"
    );
    for (name, expected) in [
        ("canopy.db", 0o600),
        ("canopy.db-wal", 0o600),
        ("canopy.db-shm", 0o600),
        ("access.log", 0o640),
        ("canopy.sock", 0o600),
    ] {
        assert_eq!(
            format!("{:o}", mode(&installation.file(name))),
            format!("{expected:o}"),
            "{name}'s mode"
        );
    }

    // The switch to nobody works: a file anyone may read is read.
    let readable = installation.data.with_file_name("readable");
    std::fs::write(&readable, "anyone").expect("write");
    set_mode(&readable, 0o644);
    let control = as_nobody("cat", &[&readable]);
    assert!(
        control.status.success(),
        "nobody reads a 0644 file: {control:?}"
    );

    let listed = as_nobody("ls", &[&installation.data]);
    assert!(
        !listed.status.success(),
        "nobody listed the data dir: {listed:?}"
    );
    let check_files = |how: &str| {
        for name in files {
            let read = as_nobody("cat", &[&installation.file(name)]);
            assert!(
                !read.status.success() && read.stdout.is_empty(),
                "nobody read {name} ({how}): {} bytes",
                read.stdout.len()
            );
        }
    };
    check_files("through the data dir as Canopy keeps it");
    // Each file keeps nobody out by itself, should the data dir be opened by mistake.
    set_mode(&installation.data, 0o711);
    check_files("with the data dir opened to 0711");
    set_mode(&installation.data, 0o700);
}

/// Whether `needle` occurs anywhere in the file at `path`.
fn file_holds(path: &Path, needle: &str) -> bool {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn another_user_can_read_no_file_and_the_database_holds_no_session_id() {
    if !can_switch_users() {
        return;
    }
    let parent = open_parent();
    let installation = Installation::configure(parent.path().join("data"));
    let running = installation.run().await;

    let origin = Origin::start(|_| Response::new(full("logged"))).await;
    let proxy: std::net::SocketAddr = ([127, 0, 0, 1], installation.proxy).into();
    let fetched = common::request_via(proxy, None, "GET", &origin.url("/logged"), &[])
        .await
        .expect("a request through the proxy");
    assert_eq!(fetched.status, StatusCode::OK);
    let access_log = installation.file("access.log");
    wait_for("the access log line", Duration::from_secs(10), || {
        let access_log = access_log.clone();
        async move { file_holds(&access_log, "/logged") }
    })
    .await;

    let session = log_in(installation.console).await;
    let cookie = format!("canopy_session={session}");
    let (status, _) = console(installation.console, "GET", "/api/config", &cookie, "").await;
    assert_eq!(status, StatusCode::OK, "the session opens the API");

    for name in ["canopy.db", "canopy.db-wal", "canopy.db-shm"] {
        assert!(
            !file_holds(&installation.file(name), &session),
            "{name} holds the live session id in plain text"
        );
    }
    assert_private(&installation);
    running.stop().await;
}

#[tokio::test]
async fn an_installation_with_readable_files_is_tightened_at_start() {
    if !can_switch_users() {
        return;
    }
    let parent = open_parent();
    let installation = Installation::configure(parent.path().join("data"));
    // An older Canopy left everything readable by all, with the WAL and shared memory in
    // use (held open here, as a running process would).
    let db = canopy_config::versions::Db::open(&installation.file("canopy.db"))
        .await
        .expect("db");
    db.latest().await.expect("read");
    std::fs::write(installation.file("access.log"), "an old line\n").expect("old log");
    set_mode(&installation.data, 0o755);
    for name in ["canopy.db", "canopy.db-wal", "canopy.db-shm", "access.log"] {
        set_mode(&installation.file(name), 0o644);
    }
    let read = as_nobody("cat", &[&installation.file("canopy.db")]);
    assert!(read.status.success(), "the old installation is readable");

    let running = installation.run().await;
    let proxy: std::net::SocketAddr = ([127, 0, 0, 1], installation.proxy).into();
    let origin = Origin::start(|_| Response::new(full("logged"))).await;
    common::request_via(proxy, None, "GET", &origin.url("/after"), &[])
        .await
        .expect("a request through the proxy");
    let access_log = installation.file("access.log");
    wait_for("the access log line", Duration::from_secs(10), || {
        let access_log = access_log.clone();
        async move { file_holds(&access_log, "/after") }
    })
    .await;
    assert_private(&installation);
    let output = running.output();
    for name in ["canopy.db", "canopy.db-wal", "canopy.db-shm", "access.log"] {
        let path = installation.file(name).display().to_string();
        assert!(
            output
                .lines()
                .any(|line| line.contains("tightened") && line.contains(&path)),
            "Canopy says it tightened {path}:\n{output}"
        );
    }
    let dir = installation.data.display().to_string();
    assert!(
        output
            .lines()
            .any(|line| line.contains("tightened") && line.contains(&format!("{dir}:"))),
        "Canopy says it tightened the data dir:\n{output}"
    );
    drop(db);
    running.stop().await;
}
