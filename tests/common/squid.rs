//! A real Squid (Debian's 5.7) as a neighbour in the tests, run as DESIGN.md §9 says: on
//! 127.0.0.2 for everything (Squid ignores ICP from its own address), in the foreground,
//! with pinger and network-distance rules off, logs in a temporary folder that the
//! `proxy` user can write to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::free_port;

/// Squid's address in every test.
pub const SQUID_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Squid's binary, or `None` (said loudly) when it is not installed; under `CI=true` a
/// missing Squid fails the test instead.
pub fn squid_binary() -> Option<PathBuf> {
    super::installed("squid", &["/usr/sbin/squid", "/usr/bin/squid"])
}

/// A running Squid.
pub struct Squid {
    pub dir: tempfile::TempDir,
    pub http: SocketAddr,
    pub icp_port: u16,
    child: Child,
}

impl Squid {
    /// Starts Squid with `extra` lines appended to the base config (cache_peer lines,
    /// timeouts), and waits until its HTTP port accepts connections.
    pub fn start(binary: &Path, extra: &str) -> Squid {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod squid dir");
        let http_port = free_port_on(SQUID_IP);
        let icp_port = free_udp_port_on(SQUID_IP);
        let d = dir.path().display();
        let config = format!(
            "http_port {SQUID_IP}:{http_port}\n\
             icp_port {icp_port}\n\
             udp_incoming_address {SQUID_IP}\n\
             udp_outgoing_address {SQUID_IP}\n\
             tcp_outgoing_address {SQUID_IP}\n\
             acl loopback src 127.0.0.0/8\n\
             http_access allow loopback\n\
             http_access deny all\n\
             icp_access allow loopback\n\
             icp_access deny all\n\
             cache_mem 16 MB\n\
             pid_filename {d}/squid.pid\n\
             cache_log {d}/cache.log\n\
             access_log stdio:{d}/access.log\n\
             coredump_dir {d}\n\
             pinger_enable off\n\
             minimum_direct_rtt 0\n\
             minimum_direct_hops 0\n\
             netdb_filename none\n\
             shutdown_lifetime 0 seconds\n\
             visible_hostname squid-under-test\n\
             logfile_rotate 0\n\
             {extra}\n"
        );
        let conf = dir.path().join("squid.conf");
        std::fs::write(&conf, config).expect("write squid.conf");
        let stderr = std::fs::File::create(dir.path().join("stderr")).expect("squid stderr");
        let child = Command::new(binary)
            .arg("-N")
            .arg("-f")
            .arg(&conf)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start squid");
        let mut squid = Squid {
            dir,
            http: SocketAddr::new(SQUID_IP, http_port),
            icp_port,
            child,
        };
        squid.wait_until_up();
        squid
    }

    fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "squid exited while starting ({status}):\n{}",
                    self.cache_log()
                );
            }
            let accepting = std::net::TcpStream::connect(self.http).is_ok();
            if accepting && self.cache_log().contains("Accepting ICP messages") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "squid did not come up:\n{}",
                self.cache_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn cache_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cache.log")).unwrap_or_default()
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
        super::wait_for(
            &format!("squid to log {what} for {url}"),
            Duration::from_secs(10),
            || async { self.logged(what, url) > 0 },
        )
        .await;
    }

    /// Squid counts a peer it has not reached over TCP yet as dead: objects `canopy` holds
    /// are asked for through Squid until Squid fetches one from Canopy (`SIBLING_HIT`).
    pub async fn fetches_from(&self, canopy: &super::Canopy, origin: &super::Origin) {
        let mut round = 0;
        super::wait_for(
            "squid to use canopy as a sibling",
            Duration::from_secs(10),
            || {
                round += 1;
                let url = origin.url(&format!("/warm-up-{round}"));
                async move {
                    canopy.get(&url).await;
                    super::request_via(self.http, None, "GET", &url, &[])
                        .await
                        .unwrap();
                    self.logged("SIBLING_HIT/127.0.0.1", &url) > 0
                }
            },
        )
        .await;
    }

    /// SIGSTOP: Squid stops answering anything until [`Squid::resume`].
    pub fn pause(&self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGSTOP).expect("SIGSTOP squid");
    }

    pub fn resume(&self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGCONT).expect("SIGCONT squid");
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP port free now on `ip`.
pub fn free_udp_port_on(ip: IpAddr) -> u16 {
    std::net::UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// A TCP port free now on `ip`.
pub fn free_port_on(ip: IpAddr) -> u16 {
    if ip == IpAddr::V4(Ipv4Addr::LOCALHOST) {
        return free_port();
    }
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `cache_dir ufs` made ready by `squid -z` (a memory-only Squid never builds a cache
/// digest). Returns the folder, to keep alive while Squid runs, and the config line.
pub fn ufs_cache_dir(binary: &Path) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod cache dir");
    let d = dir.path().display();
    let line = format!("cache_dir ufs {d}/ufs 16 4 4");
    let conf = dir.path().join("squid-z.conf");
    std::fs::write(
        &conf,
        format!("{line}\npid_filename {d}/squid-z.pid\ncache_log {d}/cache-z.log\n"),
    )
    .expect("write squid-z.conf");
    let output = Command::new(binary)
        .args(["-N", "-z", "-f"])
        .arg(&conf)
        .current_dir(dir.path())
        .output()
        .expect("run squid -z");
    assert!(
        output.status.success() && dir.path().join("ufs/00").is_dir(),
        "squid -z failed ({}):\n{}",
        output.status,
        std::fs::read_to_string(dir.path().join("cache-z.log")).unwrap_or_default()
    );
    (dir, line)
}

/// Asks the cache at `addr` for its digest as a peer does (origin form, `Accept:
/// application/cache-digest`): the reply must be 200 with the digest's content type.
pub async fn fetch_digest(addr: SocketAddr) -> canopy_proxy::digest::cache_digest::CacheDigest {
    use canopy_proxy::digest::{CONTENT_TYPE, STORE_DIGEST_PATH};
    let mut connection = super::raw::RawConnection::connect(addr).await;
    let request = format!(
        "GET {STORE_DIGEST_PATH} HTTP/1.1\r\nHost: {addr}\r\nAccept: {CONTENT_TYPE}\r\n\
         Connection: close\r\n\r\n"
    );
    connection.send(request.as_bytes()).await;
    let reply = connection.response().await.expect("the cache answers");
    assert_eq!(reply.status(), 200, "digest request: {}", reply.start);
    assert_eq!(reply.field("content-type"), Some(CONTENT_TYPE));
    canopy_proxy::digest::cache_digest::CacheDigest::decode(&reply.body)
        .expect("the digest decodes")
}
