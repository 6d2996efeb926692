//! Processes that outlive each other (issue 13, findings 2 and 9): `canopy run` restarts
//! whichever of its two processes dies while the other goes on answering, and the access
//! log can be rotated with SIGHUP or `canopy logs reopen`. Real processes, real signals.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use canopy_config::control::{self, Command as ControlCommand, StatusReply};
use canopy_config::versions::Db;
use common::{canopy_cli, free_port, full, request_via, stderr, stdout, wait_for, Canopy, Origin};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const LIMIT: Duration = Duration::from_secs(30);

/// `canopy run` on a fresh data dir with free ports; its stderr goes to `run.log` there.
struct Run {
    dir: tempfile::TempDir,
    child: Child,
    proxy: SocketAddr,
    console: SocketAddr,
}

impl Run {
    async fn start() -> Run {
        let dir = tempfile::tempdir().expect("dir");
        let proxy = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let console = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let db = Db::open(&dir.path().join("canopy.db")).await.expect("db");
        let mut config = db.latest().await.expect("latest").config;
        config
            .set_all([
                ("http_port", proxy.port().to_string().as_str()),
                ("bind_address", "127.0.0.1"),
                ("manager_listen", console.to_string().as_str()),
            ])
            .expect("settings");
        db.save_change(&config, "test", None).await.expect("saved");
        drop(db);
        let log = std::fs::File::create(dir.path().join("run.log")).expect("run.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_canopy"))
            .arg("--data-dir")
            .arg(dir.path())
            .arg("run")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("canopy run");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        while let Some(Ok(line)) = lines.next() {
            if line.contains("Ctrl-C") {
                break;
            }
        }
        let run = Run {
            dir,
            child,
            proxy,
            console,
        };
        let console = run.console;
        wait_for("the console to answer", LIMIT, || async move {
            console_answers(console).await
        })
        .await;
        run
    }

    fn control(&self) -> PathBuf {
        self.dir.path().join("canopy.sock")
    }

    async fn proxy_pid(&self) -> Option<u32> {
        control::call_typed::<StatusReply>(&self.control(), ControlCommand::Status)
            .await
            .ok()
            .map(|s| s.pid)
    }

    /// The console's pid: the child of `canopy run` called canopy-manager.
    fn manager_pid(&self) -> Option<u32> {
        children_of(self.child.id())
            .into_iter()
            .find(|(_, name)| name == "canopy-manager")
            .map(|(pid, _)| pid)
    }

    fn status(&self) -> String {
        let output = canopy_cli(self.dir.path(), &["status"]);
        format!("{}{}", stdout(&output), stderr(&output))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("run.log")).unwrap_or_default()
    }

    fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        for _ in 0..500 {
            if !self.still_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(pid, name)` of every process whose parent is `parent`.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (name) state ppid ...: the name may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            found.push((pid, stat[open + 1..close].to_owned()));
        }
    }
    found
}

/// Whether the console answers `GET /login` with 200.
async fn console_answers(console: SocketAddr) -> bool {
    let Ok(Ok(stream)) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(console),
    )
    .await
    else {
        return false;
    };
    let mut stream = stream.into_std().expect("std stream");
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /login HTTP/1.1\r\nHost: {console}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// Sends requests through `proxy` one after another until `stop`; counts those that did
/// not get the origin's answer.
fn keep_asking(
    proxy: SocketAddr,
    url: String,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, f) = (answered.clone(), failed.clone());
    tokio::spawn(async move {
        while !stop.load(Relaxed) {
            match request_via(proxy, None, "GET", &url, &[]).await {
                Ok(fetched) if fetched.text() == "from the origin" => a.fetch_add(1, Relaxed),
                _ => f.fetch_add(1, Relaxed),
            };
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    (answered, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_console_comes_back_and_the_proxy_answers_throughout() {
    let origin = Origin::start(|_| {
        hyper::Response::builder()
            .header("cache-control", "no-store")
            .body(full("from the origin"))
            .expect("response")
    })
    .await;
    let run = Run::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = keep_asking(run.proxy, origin.url("/"), stop.clone());
    wait_for("requests through the proxy", LIMIT, || {
        let answered = answered.clone();
        async move { answered.load(Relaxed) >= 5 }
    })
    .await;
    let manager = run
        .manager_pid()
        .expect("canopy-manager runs under canopy run");
    kill(Pid::from_raw(manager as i32), Signal::SIGKILL).expect("kill -9 canopy-manager");
    wait_for("a new canopy-manager", LIMIT, || {
        let new = run.manager_pid();
        async move { new.is_some_and(|pid| pid != manager) }
    })
    .await;
    let console = run.console;
    wait_for("the console to answer again", LIMIT, || async move {
        console_answers(console).await
    })
    .await;
    let before = answered.load(Relaxed);
    wait_for("more requests through the proxy", LIMIT, || {
        let answered = answered.clone();
        async move { answered.load(Relaxed) >= before + 5 }
    })
    .await;
    stop.store(true, Relaxed);
    assert_eq!(
        failed.load(Relaxed),
        0,
        "requests failed while the console was down ({} answered)",
        answered.load(Relaxed)
    );
    let status = run.status();
    assert!(
        status.contains("canopy-manager: running") && status.contains("restarts 1"),
        "{status}"
    );
    assert!(
        run.log().contains("canopy-manager was killed by signal 9"),
        "{}",
        run.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_proxy_comes_back_and_the_console_answers_throughout() {
    let origin = Origin::start(|_| hyper::Response::new(full("from the origin"))).await;
    let mut run = Run::start().await;
    let proxy = run.proxy_pid().await.expect("the proxy answers");
    let stop = Arc::new(AtomicBool::new(false));
    let console = run.console;
    let (stop_console, refused) = (stop.clone(), Arc::new(AtomicUsize::new(0)));
    let counted = refused.clone();
    let asking = tokio::spawn(async move {
        let mut answered = 0;
        while !stop_console.load(Relaxed) {
            if console_answers(console).await {
                answered += 1;
            } else {
                counted.fetch_add(1, Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        answered
    });
    kill(Pid::from_raw(proxy as i32), Signal::SIGKILL).expect("kill -9 canopy-proxy");
    wait_for("a new canopy-proxy", LIMIT, || {
        let run = &run;
        async move { run.proxy_pid().await.is_some_and(|pid| pid != proxy) }
    })
    .await;
    let fetched = request_via(run.proxy, None, "GET", &origin.url("/"), &[])
        .await
        .expect("the new proxy answers");
    assert_eq!(fetched.text(), "from the origin");
    stop.store(true, Relaxed);
    let answered = asking.await.expect("console checks");
    assert!(answered > 0);
    assert_eq!(
        refused.load(Relaxed),
        0,
        "the console failed while the proxy was down"
    );
    assert!(run.still_running());
    let status = run.status();
    assert!(
        status.contains("canopy-proxy: running") && status.contains("restarts 1"),
        "{status}"
    );
    assert!(
        run.log().contains("canopy-proxy was killed by signal 9"),
        "{}",
        run.log()
    );
}

/// Waits until the access log at `path` has a line for `url`.
async fn logged(path: &Path, url: &str) {
    let (path, url) = (path.to_owned(), url.to_owned());
    wait_for(&format!("{url} in {}", path.display()), LIMIT, || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let found = text.contains(&url);
        async move { found }
    })
    .await;
}

/// Rotates the access log as logrotate does (rename, then ask for a reopen with `reopen`),
/// and checks that later lines go to a fresh file and earlier ones stay in the old one.
async fn rotate(proxy: &Canopy, origin: &Origin, reopen: impl FnOnce()) {
    let log = proxy.data_dir().join("access.log");
    let rotated = proxy.data_dir().join("access.log.1");
    let before = origin.url("/before-rotation");
    assert_eq!(proxy.get(&before).await.text(), "logged");
    logged(&log, &before).await;
    std::fs::rename(&log, &rotated).expect("mv access.log access.log.1");
    reopen();
    let after = origin.url("/after-rotation");
    assert_eq!(proxy.get(&after).await.text(), "logged");
    logged(&log, &after).await;
    let fresh = std::fs::read_to_string(&log).expect("access.log");
    let old = std::fs::read_to_string(&rotated).expect("access.log.1");
    assert!(!fresh.contains(&before), "{fresh}");
    assert!(old.contains(&before) && !old.contains(&after), "{old}");
}

#[tokio::test]
async fn sighup_reopens_the_access_log_and_the_proxy_goes_on() {
    let origin = Origin::start(|_| hyper::Response::new(full("logged"))).await;
    let proxy = Canopy::start(&[]).await;
    let pid = Pid::from_raw(proxy.pid() as i32);
    rotate(&proxy, &origin, || {
        kill(pid, Signal::SIGHUP).expect("kill -HUP")
    })
    .await;
    kill(pid, Signal::SIGHUP).expect("a second kill -HUP");
    assert_eq!(proxy.get(&origin.url("/")).await.text(), "logged");
    assert_eq!(proxy.status().await.expect("status").pid, proxy.pid());
}

#[tokio::test]
async fn canopy_logs_reopen_reopens_the_access_log() {
    let origin = Origin::start(|_| hyper::Response::new(full("logged"))).await;
    let proxy = Canopy::start(&[]).await;
    rotate(&proxy, &origin, || {
        let output = proxy.cli(&["logs", "reopen"]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(
            stdout(&output).contains("access.log"),
            "{}",
            stdout(&output)
        );
    })
    .await;
}

#[tokio::test]
async fn sighup_to_canopy_run_reopens_the_proxys_access_log() {
    let origin = Origin::start(|_| hyper::Response::new(full("from the origin"))).await;
    let mut run = Run::start().await;
    let proxy = run.proxy_pid().await.expect("the proxy answers");
    let log = run.dir.path().join("access.log");
    let before = origin.url("/before-rotation");
    request_via(run.proxy, None, "GET", &before, &[])
        .await
        .expect("through the proxy");
    logged(&log, &before).await;
    std::fs::rename(&log, run.dir.path().join("access.log.1")).expect("mv");
    kill(Pid::from_raw(run.child.id() as i32), Signal::SIGHUP).expect("kill -HUP canopy run");
    let after = origin.url("/after-rotation");
    wait_for("a line in a fresh access.log", LIMIT, || {
        let (addr, after, log) = (run.proxy, after.clone(), log.clone());
        async move {
            let _ = request_via(addr, None, "GET", &after, &[]).await;
            std::fs::read_to_string(&log).is_ok_and(|text| text.contains(&after))
        }
    })
    .await;
    assert!(run.still_running());
    assert_eq!(
        run.proxy_pid().await,
        Some(proxy),
        "the proxy was not restarted"
    );
}

#[tokio::test]
async fn sigterm_lets_the_request_being_served_finish_then_stops() {
    // An origin that answers one second after the request arrived.
    let origin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("origin");
    let url = format!("http://{}/slow", origin.local_addr().expect("addr"));
    let arrived = Arc::new(AtomicBool::new(false));
    let seen = arrived.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut stream, _) = origin.accept().await.expect("accept");
        let mut head = [0u8; 4096];
        let _ = stream.read(&mut head).await;
        seen.store(true, Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nslow answer")
            .await;
    });
    let mut proxy = Canopy::start(&[]).await;
    let addr = proxy.addr;
    let asked = tokio::spawn(async move { request_via(addr, None, "GET", &url, &[]).await });
    wait_for("the request to reach the origin", LIMIT, || {
        let arrived = arrived.clone();
        async move { arrived.load(Relaxed) }
    })
    .await;
    kill(Pid::from_raw(proxy.pid() as i32), Signal::SIGTERM).expect("kill -TERM");
    let fetched = asked.await.expect("client").expect("the answer, whole");
    assert_eq!(fetched.text(), "slow answer");
    let exit = proxy.exited(LIMIT).await.expect("the proxy stopped");
    assert!(exit.success(), "{exit}");
}

/// Whether `pid` is gone (or a zombie nobody has reaped yet).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rfind(')')
            .and_then(|close| stat[close + 1..].split_whitespace().next())
            == Some("Z")
    })
}

#[tokio::test]
async fn children_stop_when_canopy_run_is_killed() {
    let mut run = Run::start().await;
    let proxy = run.proxy_pid().await.expect("the proxy answers");
    let manager = run.manager_pid().expect("the console runs");
    run.child.kill().expect("kill -9 canopy run");
    run.child.wait().expect("reaped");
    wait_for("both children to stop", LIMIT, || async move {
        gone(proxy) && gone(manager)
    })
    .await;
}

/// `pkill -HUP canopy` reaches the console too: it has no log file to reopen and goes on.
#[tokio::test]
async fn sighup_to_the_console_leaves_it_serving() {
    let console = common::console::Console::start("admin", "a long passphrase").await;
    kill(Pid::from_raw(console.pid() as i32), Signal::SIGHUP).expect("kill -HUP");
    let log = console.data_dir().join("manager.log");
    wait_for(
        "the console to log the SIGHUP",
        Duration::from_secs(10),
        || async { std::fs::read_to_string(&log).is_ok_and(|text| text.contains("SIGHUP")) },
    )
    .await;
    let page = request_via(
        console.addr,
        None,
        "GET",
        &format!("http://{}/login", console.addr),
        &[],
    )
    .await
    .expect("the console still answers");
    assert_eq!(page.status, 200);
}
