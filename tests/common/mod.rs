//! End-to-end harness: real `canopy-proxy` processes on temporary data dirs and free
//! loopback ports, a real origin server that records what it receives, and an HTTP client
//! that speaks to a proxy as browsers and curl do (absolute-form request lines).

#![allow(dead_code)] // Each test binary uses its own part of the harness.

pub mod console;
pub mod disk;
pub mod fleet;
pub mod nginx;
pub mod raw;
pub mod squid;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};

use canopy_config::control::{self, Command as ControlCommand, StatusReply};
use canopy_config::stats::StatsSnapshot;
use canopy_config::versions::Db;

pub type OriginBody = BoxBody<Bytes, Infallible>;

/// Waits for `check` to hold, polling, and fails the test with `what` after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first of `paths` that exists: Debian package `package`'s binary. `None`, said loudly,
/// when it is not installed; under `CI=true` a missing package fails the test instead.
pub fn installed(package: &str, paths: &[&str]) -> Option<PathBuf> {
    let found = paths.iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{package} is not installed (apt-get install -y {package}); CI must run the tests that need it"
        );
        eprintln!(
            "SKIPPED: {package} is not installed (apt-get install -y {package}); this test did NOT run"
        );
    }
    found
}

/// A port nobody listens on now, on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A UDP port nobody uses now, on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

pub fn full(body: impl Into<Bytes>) -> OriginBody {
    Full::new(body.into()).boxed()
}

/// A request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
}

type Handler = dyn Fn(&Seen) -> Response<OriginBody> + Send + Sync;

/// An origin server on loopback that answers with `handler` and records every request.
pub struct Origin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Origin {
    pub async fn start(
        handler: impl Fn(&Seen) -> Response<OriginBody> + Send + Sync + 'static,
    ) -> Origin {
        Origin::start_on(IpAddr::from([127, 0, 0, 1]), handler).await
    }

    /// As [`Origin::start`], on another loopback address (for tests that tell hosts apart).
    pub async fn start_on(
        ip: IpAddr,
        handler: impl Fn(&Seen) -> Response<OriginBody> + Send + Sync + 'static,
    ) -> Origin {
        let listener = TcpListener::bind((ip, 0)).await.expect("origin bind");
        let addr = listener.local_addr().expect("origin addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let recorded = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, recorded) = (handler.clone(), recorded.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let seen = Seen {
                            method: req.method().to_string(),
                            path: req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            headers: req.headers().clone(),
                        };
                        recorded.lock().unwrap().push(seen.clone());
                        let response = handler(&seen);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { addr, seen }
    }

    /// The URL of `path` on this origin.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests for `path` arrived.
    pub fn count(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path == path).count()
    }
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Fetched {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request through the proxy at `proxy`, from `from` when given.
pub async fn request_via(
    proxy: SocketAddr,
    from: Option<IpAddr>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Fetched, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if let Some(from) = from {
        socket
            .bind(SocketAddr::new(from, 0))
            .map_err(|e| e.to_string())?;
    }
    let stream = socket.connect(proxy).await.map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut builder = Request::builder().method(method).uri(url);
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    builder = builder.header("host", authority);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Fetched {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

pub fn binary(name: &str) -> PathBuf {
    let canopy = PathBuf::from(env!("CARGO_BIN_EXE_canopy"));
    let path = canopy.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// A running `canopy-proxy` on its own data dir.
pub struct Canopy {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    child: std::process::Child,
    open_files: Option<u64>,
}

impl Canopy {
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("access.log")).unwrap_or_default()
    }

    /// Access log lines that mention `url` and contain `what`.
    pub fn logged(&self, what: &str, url: &str) -> usize {
        self.access_log()
            .lines()
            .filter(|l| l.contains(what) && l.split_whitespace().any(|f| f == url))
            .count()
    }

    /// Waits until the access log has a line for `url` containing `what`.
    pub async fn wait_logged(&self, what: &str, url: &str) {
        wait_for(
            &format!("canopy to log {what} for {url}"),
            Duration::from_secs(30),
            || async { self.logged(what, url) > 0 },
        )
        .await;
    }

    /// Writes `settings` as a config version (with `visible_name` and a free `http_port`
    /// unless given), then starts the proxy and waits until it answers.
    pub async fn start(settings: &[(&str, &str)]) -> Canopy {
        Canopy::start_limited(settings, None).await
    }

    /// As [`Canopy::start`], with the process allowed only `limit` open files
    /// (RLIMIT_NOFILE), to show what happens when descriptors run out.
    pub async fn start_with_open_files(settings: &[(&str, &str)], limit: u64) -> Canopy {
        Canopy::start_limited(settings, Some(limit)).await
    }

    async fn start_limited(settings: &[(&str, &str)], open_files: Option<u64>) -> Canopy {
        // A port free_port() found free can be taken before the proxy binds it (by another
        // test's listener, on any 127.0.0.0/8 address when `bind_address` is empty): then
        // the start is tried again on a fresh data dir and another port.
        let ours = !settings.iter().any(|(key, _)| *key == "http_port");
        for _ in 0..5 {
            let mut canopy = Canopy::prepare(settings, open_files).await;
            match canopy.wait_until_up().await {
                Ok(()) => return canopy,
                Err(log) if ours && log.contains("Address already in use") => continue,
                Err(log) => panic!("canopy-proxy did not come up: {log}"),
            }
        }
        panic!("canopy-proxy found its port taken five times");
    }

    async fn prepare(settings: &[(&str, &str)], open_files: Option<u64>) -> Canopy {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port().to_string();
        let mut all: HashMap<&str, &str> = HashMap::from([
            ("http_port", port.as_str()),
            ("visible_name", "canopy-under-test"),
            ("bind_address", "127.0.0.1"),
        ]);
        all.extend(settings.iter().copied());
        let db = Db::open(&dir.path().join("canopy.db")).await.expect("db");
        let mut config = db.latest().await.expect("latest").config;
        config
            .set_all(all.iter().map(|(k, v)| (*k, *v)))
            .expect("valid test settings");
        db.save_change(&config, "test", None).await.expect("saved");
        drop(db);
        Canopy {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: spawn_proxy(dir.path(), open_files),
            open_files,
            dir,
        }
    }

    /// Waits until the control socket answers; the proxy's log when it exits first.
    async fn wait_until_up(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Err(format!("exited ({status}): {}", self.log()));
            }
            if let Ok(status) = self.status().await {
                self.addr = status.http_listen.parse().expect("listen address");
                return Ok(());
            }
            assert!(Instant::now() < deadline, "canopy-proxy did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn control_path(&self) -> PathBuf {
        self.dir.path().join("canopy.sock")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs the `canopy` command on this proxy's data dir.
    pub fn cli(&self, args: &[&str]) -> Output {
        canopy_cli(self.data_dir(), args)
    }

    pub async fn status(&self) -> Result<StatusReply, control::ControlError> {
        control::call_typed(&self.control_path(), ControlCommand::Status).await
    }

    pub async fn stats(&self) -> StatsSnapshot {
        control::call_typed(&self.control_path(), ControlCommand::Stats)
            .await
            .expect("stats")
    }

    pub async fn get(&self, url: &str) -> Fetched {
        self.request("GET", url, &[]).await
    }

    /// Starts a GET through the proxy and returns as soon as the response head arrives,
    /// its body still to be read.
    pub async fn open(&self, url: &str) -> Response<Incoming> {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let authority = url.split('/').nth(2).unwrap().to_owned();
        let request = Request::get(url)
            .header("host", authority)
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(request).await.unwrap()
    }

    pub async fn request(&self, method: &str, url: &str, headers: &[(&str, &str)]) -> Fetched {
        request_via(self.addr, None, method, url, headers)
            .await
            .unwrap_or_else(|e| panic!("{method} {url} through {}: {e}", self.addr))
    }

    /// Starts the proxy again on the same data dir (after [`Canopy::kill`]).
    pub async fn restart(&mut self) {
        self.child = spawn_proxy(self.dir.path(), self.open_files);
        if let Err(log) = self.wait_until_up().await {
            panic!("canopy-proxy did not come up again: {log}");
        }
    }

    /// Starts the proxy again on the same data dir without waiting for it, for a start
    /// that may be refused (see [`Canopy::exited`] and [`Canopy::log`]).
    pub fn launch(&mut self) {
        self.child = spawn_proxy(self.dir.path(), self.open_files);
    }

    /// What the proxy wrote to its terminal (stderr) since it was last started.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// Changes settings with `canopy config set` and applies them with `canopy reload`.
    pub fn reconfigure(&self, settings: &[(&str, &str)]) {
        for (key, value) in settings {
            let set = self.cli(&["config", "set", key, value]);
            assert!(set.status.success(), "config set {key}: {}", stderr(&set));
        }
        let reload = self.cli(&["reload"]);
        assert!(reload.status.success(), "reload: {}", stderr(&reload));
    }

    /// Waits up to `limit` for the process to end by itself; `None` if it has not.
    pub async fn exited(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Canopy {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_proxy(data_dir: &Path, open_files: Option<u64>) -> std::process::Child {
    let log = std::fs::File::create(data_dir.join("proxy.log")).expect("proxy log");
    let mut command = Command::new(binary("canopy-proxy"));
    if let Some(limit) = open_files {
        use nix::sys::resource::{setrlimit, Resource};
        use std::os::unix::process::CommandExt;
        // Safety: setrlimit is async-signal-safe, and nothing else runs in the child.
        unsafe {
            command.pre_exec(move || {
                setrlimit(Resource::RLIMIT_NOFILE, limit, limit).map_err(std::io::Error::from)
            });
        }
    }
    command
        .arg("--db")
        .arg(data_dir.join("canopy.db"))
        .arg("--control")
        .arg(data_dir.join("canopy.sock"))
        .env(
            "RUST_LOG",
            std::env::var("CANOPY_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start canopy-proxy")
}

/// Runs `canopy --data-dir DIR ARGS...`.
pub fn canopy_cli(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canopy"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("run canopy")
}

/// Runs `canopy ARGS` on the proxy's data dir and insists it worked.
pub fn cli_ok(canopy: &Canopy, args: &[&str]) -> String {
    let output = canopy.cli(args);
    assert!(
        output.status.success(),
        "canopy {args:?} failed: {}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// The counters the proxy keeps for the peer (or HTTP parent) `name`.
pub async fn peer_stats(canopy: &Canopy, name: &str) -> canopy_config::stats::PeerSnapshot {
    canopy
        .stats()
        .await
        .peers
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no counters for peer {name}"))
}

/// Runs `canopy --data-dir DIR ARGS...` with `stdin` written to its standard input.
pub fn canopy_cli_with_stdin(data_dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run canopy");
    let mut input = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut input, stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("canopy output")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A field of /proc/<pid>/status, in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Samples a process's VmRSS every 10 ms until dropped.
pub struct RssSampler {
    pid: u32,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let seen = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                seen.fetch_max(status_kib(pid, "VmRSS"), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        RssSampler { pid, peak, task }
    }

    /// The highest resident size seen: sampled, or the kernel's high-water mark (VmHWM),
    /// which also catches a peak between two samples.
    pub fn peak_kib(&self) -> u64 {
        self.peak
            .load(Ordering::SeqCst)
            .max(status_kib(self.pid, "VmHWM"))
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}
