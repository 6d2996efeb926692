//! The disk tier end to end: what is stored survives a restart and a `kill -9`, and a disk
//! that is corrupt, read-only or full never makes the proxy serve a wrong byte or fail a
//! request: it counts the fault and serves from memory or upstream.
//!
//! Read-only and full file systems are small tmpfs mounts (root only): outside CI a test
//! that cannot mount one says so and does not run; under `CI=true` it fails.

mod common;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Response;
use tokio::sync::watch;

use canopy_config::stats::DiskSnapshot;
use common::disk::ReadOnlyOver;
use common::*;

const KIB: usize = 1024;
/// Kept in memory as well as on disk (under max_object_size_in_memory, 512 KiB).
const SMALL: usize = 100 * KIB;
/// Kept on disk only, and streamed from it.
const LARGE: usize = 2048 * KIB;
/// Larger than the socket buffers a client that reads nothing can make the proxy fill.
const HUGE: usize = 6 * 1024 * KIB;
/// Many of these fill the disk tier at once.
const TINY: usize = 4 * KIB;

/// Body bytes that differ by position, so a byte out of place shows.
fn body_of(path: &str, len: usize) -> Bytes {
    let seed = path
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
        .into()
}

/// The length a path asks for: `/large…` and `/slow` are LARGE, `/huge…` HUGE, `/tiny…`
/// TINY, the rest SMALL.
fn len_of(path: &str) -> usize {
    if path.starts_with("/large") || path == "/slow" {
        LARGE
    } else if path.starts_with("/huge") {
        HUGE
    } else if path.starts_with("/tiny") {
        TINY
    } else {
        SMALL
    }
}

/// An origin of fresh objects (an hour) whose bodies are [`body_of`] their path.
async fn origin() -> Origin {
    Origin::start(|seen| {
        Response::builder()
            .header("cache-control", "max-age=3600")
            .body(full(body_of(&seen.path, len_of(&seen.path))))
            .unwrap()
    })
    .await
}

async fn disk(proxy: &Canopy) -> DiskSnapshot {
    proxy.stats().await.disk.expect("the disk tier is on")
}

async fn wait_for_writes(proxy: &Canopy, writes: u64) {
    wait_for(
        "objects written to disk",
        Duration::from_secs(10),
        || async { disk(proxy).await.writes >= writes },
    )
    .await;
}

fn is_hit(fetched: &Fetched) -> bool {
    fetched.header("x-cache").starts_with("HIT")
}

/// Gets `path` and checks every byte of it; whether it was a hit.
async fn get_whole(proxy: &Canopy, origin: &Origin, path: &str) -> bool {
    let fetched = proxy.get(&origin.url(path)).await;
    assert_eq!(fetched.status, 200, "{path}");
    assert!(
        fetched.body == body_of(path, len_of(path)),
        "{path}: {} bytes, not the origin's {}",
        fetched.body.len(),
        len_of(path)
    );
    is_hit(&fetched)
}

/// The object files of the disk cache in `dir`.
fn object_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in std::fs::read_dir(dir.join("objects")).unwrap() {
        for file in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            files.push(file.unwrap().path());
        }
    }
    files
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("tmp"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect()
}

#[tokio::test]
async fn a_restart_keeps_fresh_objects_as_hits_from_both_tiers() {
    let origin = origin().await;
    let mut proxy = Canopy::start(&[]).await;
    assert!(!get_whole(&proxy, &origin, "/small").await);
    assert!(!get_whole(&proxy, &origin, "/large").await);
    wait_for_writes(&proxy, 2).await;
    assert!(get_whole(&proxy, &origin, "/small").await);
    assert!(get_whole(&proxy, &origin, "/large").await);
    proxy.kill();
    proxy.restart().await;
    assert!(
        get_whole(&proxy, &origin, "/small").await,
        "small after restart"
    );
    assert!(
        get_whole(&proxy, &origin, "/large").await,
        "large after restart"
    );
    assert!(get_whole(&proxy, &origin, "/small").await);
    assert!(get_whole(&proxy, &origin, "/small").await);
    assert_eq!(origin.count("/small"), 1);
    assert_eq!(origin.count("/large"), 1);
    let stats = proxy.stats().await;
    let disk = stats.disk.clone().unwrap();
    assert_eq!(disk.objects, 2, "{disk:?}");
    // The small one came from disk twice (then from memory, where the second disk hit
    // promoted it); the large one streams from disk each time.
    assert_eq!(disk.hits_served, 3, "{disk:?}");
    assert_eq!(stats.memory_hits, 1, "{stats:?}");
    assert_eq!(disk.faults_full + disk.faults_io + disk.faults_corrupt, 0);
}

#[tokio::test]
async fn purge_and_unsafe_methods_remove_objects_from_disk_too() {
    let origin = origin().await;
    let mut proxy = Canopy::start(&[]).await;
    for path in ["/small", "/large", "/large-posted"] {
        get_whole(&proxy, &origin, path).await;
    }
    wait_for_writes(&proxy, 3).await;
    proxy.kill();
    proxy.restart().await;
    let purged = proxy.request("PURGE", &origin.url("/small"), &[]).await;
    assert_eq!(purged.status, 200);
    let purged = proxy.request("PURGE", &origin.url("/large"), &[]).await;
    assert_eq!(purged.status, 200, "found on disk only, and purged");
    proxy
        .request("POST", &origin.url("/large-posted"), &[])
        .await;
    for path in ["/small", "/large", "/large-posted"] {
        assert!(
            !get_whole(&proxy, &origin, path).await,
            "{path} after removal"
        );
    }
}

/// An origin whose `/slow` body (LARGE, fresh) sends its first 1 MiB at once and the rest
/// only once `gate` opens.
async fn slow_origin(gate: watch::Receiver<bool>) -> Origin {
    Origin::start(move |seen| {
        let body = body_of(&seen.path, LARGE);
        let chunks = futures_util::stream::unfold(
            (0, gate.clone(), body),
            |(at, mut gate, body)| async move {
                if at >= body.len() {
                    return None;
                }
                if at >= 1024 * KIB {
                    let _ = gate.wait_for(|open| *open).await;
                }
                let end = (at + 64 * KIB).min(body.len());
                let frame = Frame::data(body.slice(at..end));
                Some((Ok::<_, Infallible>(frame), (end, gate, body)))
            },
        );
        Response::builder()
            .header("cache-control", "max-age=3600")
            .header("content-length", LARGE)
            .body(StreamBody::new(chunks).boxed())
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn kill_9_in_the_middle_of_a_write_never_serves_a_torn_object() {
    let (open, gate) = watch::channel(false);
    let origin = slow_origin(gate).await;
    let mut proxy = Canopy::start(&[]).await;
    let cache_dir = proxy.data_dir().join("cache");
    let response = proxy.open(&origin.url("/slow")).await;
    assert_eq!(response.status(), 200);
    wait_for(
        "half the body written to tmp/",
        Duration::from_secs(10),
        || {
            let torn = temp_files(&cache_dir);
            async move {
                torn.iter()
                    .any(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 512 * KIB as u64))
            }
        },
    )
    .await;
    let torn = temp_files(&cache_dir);
    proxy.kill();
    drop(response);
    open.send_replace(true);
    proxy.restart().await;
    for file in &torn {
        assert!(!file.exists(), "{} left after the restart", file.display());
    }
    assert_eq!(disk(&proxy).await.objects, 0);
    assert!(
        !get_whole(&proxy, &origin, "/slow").await,
        "a miss, fetched whole"
    );
    assert_eq!(origin.count("/slow"), 2);
    wait_for_writes(&proxy, 1).await;
    assert!(get_whole(&proxy, &origin, "/slow").await);
}

/// Overwrites bytes in the middle of `file`.
fn corrupt(file: &Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    let at = f.metadata().unwrap().len() / 2;
    f.write_all_at(b"not what was written", at).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test]
async fn a_corrupt_object_is_a_miss_and_a_counted_fault_never_wrong_bytes() {
    let origin = origin().await;
    let mut proxy = Canopy::start(&[]).await;
    let cache_dir = proxy.data_dir().join("cache");
    get_whole(&proxy, &origin, "/small").await;
    wait_for_writes(&proxy, 1).await;
    proxy.kill();
    for file in object_files(&cache_dir) {
        corrupt(&file);
    }
    proxy.restart().await;
    // Checked whole before its first byte is sent: the client gets the origin's copy.
    assert!(!get_whole(&proxy, &origin, "/small").await);
    assert_eq!(origin.count("/small"), 2);
    assert_eq!(disk(&proxy).await.faults_corrupt, 1);
    // The good copy fetched again is stored again.
    wait_for_writes(&proxy, 1).await;
    assert!(get_whole(&proxy, &origin, "/small").await);

    // A large body is checked chunk by chunk as it streams: the response is cut off at the
    // bad chunk, never completed with other bytes, and the next request is a miss.
    get_whole(&proxy, &origin, "/large").await;
    wait_for_writes(&proxy, 2).await;
    proxy.kill();
    let large = object_files(&cache_dir)
        .into_iter()
        .max_by_key(|f| std::fs::metadata(f).unwrap().len())
        .unwrap();
    corrupt(&large);
    proxy.restart().await;
    let cut = request_via(proxy.addr, None, "GET", &origin.url("/large"), &[]).await;
    assert!(
        cut.is_err(),
        "a corrupt body must not arrive whole: {cut:?}"
    );
    assert_eq!(disk(&proxy).await.faults_corrupt, 1);
    assert!(!get_whole(&proxy, &origin, "/large").await);
    assert_eq!(origin.count("/large"), 2);
}

/// A small tmpfs of its own, when this process may mount one (root); unmounted when
/// dropped. `None` only outside CI: under `CI=true` a tmpfs that cannot be mounted fails.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI: no tmpfs could be mounted for the disk fault tests (run the tests as root)"
            );
            eprintln!("SKIPPED: no tmpfs could be mounted (not root?): this test did NOT run");
        }
        mounted.then_some(SmallFs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn remount(&self, option: &str) {
        let done = Command::new("mount")
            .args(["-o", &format!("remount,{option}")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(done.success(), "mount -o remount,{option}");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// A proxy whose disk cache is on `fs`, with `/small` stored there; and the cache's path.
async fn one_object_stored_in(fs: &SmallFs) -> (Origin, Canopy, PathBuf) {
    let origin = origin().await;
    let dir = fs.path().join("cache");
    let proxy = Canopy::start(&[("cache_dir", dir.to_str().unwrap())]).await;
    get_whole(&proxy, &origin, "/small").await;
    wait_for_writes(&proxy, 1).await;
    (origin, proxy, dir)
}

#[tokio::test]
async fn a_read_only_cache_dir_keeps_the_proxy_serving() {
    let Some(fs) = SmallFs::mount("64m") else {
        return;
    };
    let (origin, mut proxy, dir) = one_object_stored_in(&fs).await;
    let read_only = ReadOnlyOver::mount(&dir.join("tmp"));
    assert!(!get_whole(&proxy, &origin, "/other").await);
    assert!(!get_whole(&proxy, &origin, "/large").await);
    assert!(
        get_whole(&proxy, &origin, "/small").await,
        "still a hit from memory"
    );
    assert!(get_whole(&proxy, &origin, "/other").await, "kept in memory");
    let faults = disk(&proxy).await;
    assert!(faults.faults_io >= 2, "{faults:?}");
    assert_eq!(faults.writes, 1, "{faults:?}");

    // Started on a read-only file system: serving from memory, the reason in stats.
    proxy.kill();
    drop(read_only);
    fs.remount("ro");
    proxy.restart().await;
    let closed = disk(&proxy).await.closed;
    assert!(closed.is_some(), "the disk tier cannot be used read-only");
    assert!(!get_whole(&proxy, &origin, "/small").await);
    assert!(get_whole(&proxy, &origin, "/small").await);
}

#[tokio::test]
async fn a_full_disk_keeps_the_proxy_serving() {
    let Some(fs) = SmallFs::mount("8m") else {
        return;
    };
    let (origin, proxy, _) = one_object_stored_in(&fs).await;
    // Something else fills the file system.
    let filler = fs.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    assert!(!get_whole(&proxy, &origin, "/other").await);
    assert!(get_whole(&proxy, &origin, "/other").await, "kept in memory");
    assert!(get_whole(&proxy, &origin, "/small").await);
    let faults = disk(&proxy).await;
    assert!(faults.faults_full >= 1, "{faults:?}");
    assert_eq!(faults.writes, 1, "{faults:?}");
    std::fs::remove_file(&filler).unwrap();
}

#[tokio::test]
async fn a_304_updates_the_stored_headers_on_disk() {
    // Stored with max-age=0: every reuse asks the origin, which says 304 and now an hour.
    let origin = Origin::start(|seen| {
        let revalidating = seen.headers.contains_key("if-none-match");
        let builder = Response::builder().header("etag", "\"v1\"");
        if revalidating {
            return builder
                .status(304)
                .header("cache-control", "max-age=3600")
                .body(full(""))
                .unwrap();
        }
        builder
            .header("cache-control", "max-age=0")
            .body(full(body_of(&seen.path, len_of(&seen.path))))
            .unwrap()
    })
    .await;
    let mut proxy = Canopy::start(&[]).await;
    for path in ["/small", "/large"] {
        assert!(!get_whole(&proxy, &origin, path).await);
    }
    wait_for_writes(&proxy, 2).await;
    for path in ["/small", "/large"] {
        let fetched = proxy.get(&origin.url(path)).await;
        assert_eq!(fetched.header("cache-control"), "max-age=3600", "{path}");
        assert!(fetched.body == body_of(path, len_of(path)), "{path}");
        assert_eq!(origin.count(path), 2, "{path}: revalidated");
    }
    // Written in the background: waits until the index holds both new heads.
    let index = proxy.data_dir().join("cache").join("index.redb");
    wait_for("the new heads on disk", Duration::from_secs(10), || {
        let bytes = std::fs::read(&index).unwrap_or_default();
        let found = bytes.windows(12).filter(|w| w == b"max-age=3600").count();
        async move { found >= 2 }
    })
    .await;
    proxy.kill();
    proxy.restart().await;
    for path in ["/small", "/large"] {
        assert!(
            get_whole(&proxy, &origin, path).await,
            "{path} fresh after restart"
        );
        assert_eq!(origin.count(path), 2, "{path}");
    }
}

#[tokio::test]
async fn vary_variants_are_kept_apart_on_disk() {
    let origin = Origin::start(|seen| {
        let language = seen
            .headers
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        Response::builder()
            .header("cache-control", "max-age=3600")
            .header("vary", "accept-language")
            .body(full(body_of(&format!("{}{language}", seen.path), LARGE)))
            .unwrap()
    })
    .await;
    let mut proxy = Canopy::start(&[]).await;
    let url = origin.url("/large");
    for language in ["en", "fr"] {
        let fetched = proxy
            .request("GET", &url, &[("accept-language", language)])
            .await;
        assert!(!is_hit(&fetched), "{language}");
    }
    wait_for_writes(&proxy, 2).await;
    proxy.kill();
    proxy.restart().await;
    for language in ["fr", "en"] {
        let fetched = proxy
            .request("GET", &url, &[("accept-language", language)])
            .await;
        assert!(is_hit(&fetched), "{language}");
        assert!(
            fetched.body == body_of(&format!("/large{language}"), LARGE),
            "{language}"
        );
    }
    let other = proxy
        .request("GET", &url, &[("accept-language", "de")])
        .await;
    assert!(!is_hit(&other));
    assert_eq!(origin.count("/large"), 3);
}

/// Gets every one of `paths` with `clients` clients at once, each taking the next path not
/// yet taken; whether each was a hit.
async fn get_all_at_once(
    proxy: &Canopy,
    origin: &Origin,
    paths: &[String],
    clients: usize,
) -> Vec<bool> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let hits: Vec<std::sync::atomic::AtomicBool> =
        paths.iter().map(|_| Default::default()).collect();
    let client = || async {
        loop {
            let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(path) = paths.get(at) else { return };
            let hit = get_whole(proxy, origin, path).await;
            hits[at].store(hit, std::sync::atomic::Ordering::Relaxed);
        }
    };
    futures_util::future::join_all((0..clients).map(|_| client())).await;
    hits.into_iter().map(|h| h.into_inner()).collect()
}

#[tokio::test]
async fn a_parallel_fill_stores_every_object_on_disk() {
    const OBJECTS: usize = 2000;
    let origin = origin().await;
    // Kept out of memory, so that after the restart every hit shows the disk held it.
    let mut proxy = Canopy::start(&[("cache_mem", "0")]).await;
    let paths: Vec<String> = (0..OBJECTS).map(|i| format!("/tiny-{i}")).collect();
    let hits = get_all_at_once(&proxy, &origin, &paths, 16).await;
    assert!(hits.iter().all(|hit| !hit), "every first request a miss");
    // Every write ends, stored or counted as dropped; a write skipped uncounted shows as
    // the count that stops short.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let filled = loop {
        let d = disk(&proxy).await;
        if d.writes + d.writes_dropped >= OBJECTS as u64 || std::time::Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(filled.writes, OBJECTS as u64, "{filled:?}");
    assert_eq!(filled.writes_dropped, 0, "{filled:?}");
    proxy.kill();
    proxy.restart().await;
    let hits = get_all_at_once(&proxy, &origin, &paths, 16).await;
    let missed: Vec<_> = paths.iter().zip(&hits).filter(|(_, hit)| !**hit).collect();
    assert!(
        missed.is_empty(),
        "{} not served from disk: {:?}…",
        missed.len(),
        &missed[..missed.len().min(5)]
    );
    assert!(paths.iter().all(|p| origin.count(p) == 1));
}

/// Starts a GET of `url` through `proxy` from a client that takes the response head and
/// then reads nothing, with a small receive buffer, so the proxy soon has to wait for it.
async fn open_and_stall(
    proxy: &Canopy,
    url: &str,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4 * KIB as u32).unwrap();
    let stream = socket.connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let authority = url.split('/').nth(2).unwrap().to_owned();
    let request = hyper::Request::get(url)
        .header("host", authority)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    // The body is kept unread for as long as the test runs.
    std::mem::forget(response);
    sender
}

#[tokio::test]
async fn slow_readers_of_disk_objects_leave_the_disk_to_other_clients() {
    const STALLED: usize = 80;
    let origin = origin().await;
    let mut proxy = Canopy::start(&[]).await;
    let huge: Vec<String> = (0..4).map(|i| format!("/huge-{i}")).collect();
    for path in huge.iter().chain([&"/large".to_owned()]) {
        assert!(!get_whole(&proxy, &origin, path).await);
    }
    wait_for_writes(&proxy, 5).await;
    proxy.kill();
    proxy.restart().await;
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        stalled.push(open_and_stall(&proxy, &origin.url(&huge[i % huge.len()])).await);
    }
    wait_for(
        "every stalled client's body opened on disk",
        Duration::from_secs(20),
        || async { disk(&proxy).await.reads >= STALLED as u64 },
    )
    .await;
    // Each of them is served from disk, none fetched again.
    assert!(huge.iter().all(|p| origin.count(p) == 1));
    let other = tokio::time::timeout(
        Duration::from_secs(20),
        get_whole(&proxy, &origin, "/large"),
    )
    .await
    .expect("another client served while the others stall");
    assert!(other, "a disk hit for another client");
    assert_eq!(origin.count("/large"), 1);
    drop(stalled);
}

#[tokio::test]
async fn the_second_disk_hit_promotes_an_object_to_memory_not_the_first() {
    let origin = origin().await;
    let mut proxy = Canopy::start(&[]).await;
    assert!(!get_whole(&proxy, &origin, "/small").await);
    wait_for_writes(&proxy, 1).await;
    proxy.kill();
    proxy.restart().await;
    let served = |stats: canopy_config::stats::StatsSnapshot| {
        (stats.disk.unwrap().hits_served, stats.memory_hits)
    };
    assert!(get_whole(&proxy, &origin, "/small").await);
    assert_eq!(
        served(proxy.stats().await),
        (1, 0),
        "the first hit from disk"
    );
    assert!(get_whole(&proxy, &origin, "/small").await);
    assert_eq!(
        served(proxy.stats().await),
        (2, 0),
        "not promoted by one hit: from disk again"
    );
    assert!(get_whole(&proxy, &origin, "/small").await);
    assert_eq!(
        served(proxy.stats().await),
        (2, 1),
        "promoted by the second: from memory"
    );
    assert_eq!(origin.count("/small"), 1);
}

/// Asks the ICP responder at `port` about `url` from 127.0.0.1; the opcode it answers.
async fn icp_opcode(port: u16, url: &str) -> u8 {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut query = vec![1, 2, 0, 0, 0, 0, 0, 42];
    query.extend_from_slice(&[0; 16]);
    query.extend_from_slice(url.as_bytes());
    query.push(0);
    let len = query.len() as u16;
    query[2..4].copy_from_slice(&len.to_be_bytes());
    socket.send_to(&query, ("127.0.0.1", port)).await.unwrap();
    let mut reply = [0; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut reply))
        .await
        .expect("an ICP reply in time")
        .unwrap();
    assert!(n >= 20 && reply[4..8] == [0, 0, 0, 42], "{:?}", &reply[..n]);
    reply[0]
}

#[tokio::test]
async fn icp_answers_hit_for_a_fresh_object_held_only_on_disk() {
    const HIT: u8 = 2;
    const MISS: u8 = 3;
    let origin = origin().await;
    let port = free_udp_port().to_string();
    let mut proxy = Canopy::start(&[
        ("icp_mode", "receive"),
        ("icp_port", &port),
        ("icp_allowed_clients", "127.0.0.1/32"),
    ])
    .await;
    let port: u16 = port.parse().unwrap();
    for path in ["/small", "/large"] {
        get_whole(&proxy, &origin, path).await;
    }
    wait_for_writes(&proxy, 2).await;
    proxy.kill();
    proxy.restart().await;
    // What is on disk is learnt in the background after the start.
    wait_for(
        "ICP HIT for an object on disk only",
        Duration::from_secs(10),
        || async { icp_opcode(port, &origin.url("/small")).await == HIT },
    )
    .await;
    assert_eq!(
        icp_opcode(port, &origin.url("/large")).await,
        HIT,
        "large, on disk only"
    );
    assert_eq!(icp_opcode(port, &origin.url("/other")).await, MISS);
    let purged = proxy.request("PURGE", &origin.url("/large"), &[]).await;
    assert_eq!(purged.status, 200);
    assert_eq!(
        icp_opcode(port, &origin.url("/large")).await,
        MISS,
        "purged"
    );
}

#[tokio::test]
async fn a_new_cache_dir_size_applies_on_reload_shrinking_by_eviction() {
    let origin = origin().await;
    let proxy = Canopy::start(&[]).await;
    for i in 0..4 {
        get_whole(&proxy, &origin, &format!("/large-{i}")).await;
    }
    wait_for_writes(&proxy, 4).await;
    let bound = 5 * 1024 * KIB as u64;
    assert!(disk(&proxy).await.bytes > bound);
    proxy.reconfigure(&[("max_object_size", "4M"), ("cache_dir_size", "5M")]);
    wait_for(
        "the disk cache evicted down to its new bound",
        Duration::from_secs(10),
        || async {
            let d = disk(&proxy).await;
            d.capacity == bound && d.bytes <= bound
        },
    )
    .await;
    let shrunk = disk(&proxy).await;
    assert!(shrunk.evictions >= 2, "{shrunk:?}");
    proxy.reconfigure(&[("cache_dir_size", "64M")]);
    wait_for("the disk cache grown", Duration::from_secs(10), || async {
        disk(&proxy).await.capacity == 64 << 20
    })
    .await;
    for i in 4..8 {
        get_whole(&proxy, &origin, &format!("/large-{i}")).await;
    }
    wait_for_writes(&proxy, 8).await;
    let grown = disk(&proxy).await;
    assert_eq!(grown.evictions, shrunk.evictions, "room for all: {grown:?}");
}

/// An origin whose first answer for a path is fresh for one second and may then be served
/// stale (`/sie`: if the origin errs; `/swr`: while it is revalidated), and whose later
/// answers are a 503 (`/sie`) or a fresh second version (`/swr`).
async fn origin_of_stale_objects() -> Origin {
    let answered = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    Origin::start(move |seen| {
        let first = answered.lock().unwrap().insert(seen.path.clone());
        match (seen.path.as_str(), first) {
            ("/sie", true) => Response::builder()
                .header("cache-control", "max-age=1, stale-if-error=600")
                .body(full("first"))
                .unwrap(),
            ("/sie", false) => Response::builder().status(503).body(full("down")).unwrap(),
            (_, true) => Response::builder()
                .header("cache-control", "max-age=1, stale-while-revalidate=600")
                .body(full("first"))
                .unwrap(),
            (_, false) => Response::builder()
                .header("cache-control", "max-age=600")
                .body(full("second"))
                .unwrap(),
        }
    })
    .await
}

/// stale-if-error and stale-while-revalidate (RFC 5861) serve a stale object alike whether
/// it is in memory or only on disk (after a restart).
#[tokio::test]
async fn stale_objects_are_served_alike_from_memory_and_from_disk() {
    for from_disk in [false, true] {
        let tier = if from_disk { "disk" } else { "memory" };
        let origin = origin_of_stale_objects().await;
        let mut proxy = Canopy::start(&[]).await;
        for path in ["/sie", "/swr"] {
            assert_eq!(proxy.get(&origin.url(path)).await.body, "first");
        }
        wait_for_writes(&proxy, 2).await;
        if from_disk {
            proxy.kill();
            proxy.restart().await;
        }
        // Both objects go stale: a second past their max-age=1.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let disk_hits = disk(&proxy).await.hits_served;

        let erred = proxy.get(&origin.url("/sie")).await;
        assert_eq!(
            erred.status, 200,
            "{tier}: the stale copy, not the origin's 503"
        );
        assert_eq!(erred.body, "first", "{tier}");
        assert_eq!(
            origin.count("/sie"),
            2,
            "{tier}: the origin was asked and erred"
        );

        let stale = proxy.get(&origin.url("/swr")).await;
        assert_eq!(stale.body, "first", "{tier}: served stale at once");
        wait_for(
            "the revalidation in the background",
            Duration::from_secs(10),
            || async { origin.count("/swr") == 2 },
        )
        .await;
        wait_for(
            "the revalidated object served",
            Duration::from_secs(10),
            || async { proxy.get(&origin.url("/swr")).await.body == "second" },
        )
        .await;
        let served_from_disk = disk(&proxy).await.hits_served - disk_hits;
        if from_disk {
            assert!(served_from_disk >= 2, "the stale copies came from disk");
        } else {
            assert_eq!(served_from_disk, 0, "the stale copies came from memory");
        }
    }
}

/// `max_object_size` bounds the disk tier as it bounds memory: an object over it is served
/// whole but stored in neither tier, so a restart finds only the one under it.
#[tokio::test]
async fn max_object_size_keeps_larger_objects_off_the_disk() {
    let origin = origin().await;
    let mut proxy = Canopy::start(&[("max_object_size", "1M")]).await;
    assert!(!get_whole(&proxy, &origin, "/small").await);
    assert!(!get_whole(&proxy, &origin, "/large").await);
    wait_for_writes(&proxy, 1).await;
    assert!(
        !get_whole(&proxy, &origin, "/large").await,
        "2 MiB over max_object_size 1M: fetched again"
    );
    proxy.kill();
    proxy.restart().await;
    assert!(
        get_whole(&proxy, &origin, "/small").await,
        "small from disk"
    );
    assert!(
        !get_whole(&proxy, &origin, "/large").await,
        "large never stored"
    );
    assert_eq!(origin.count("/large"), 3);
    assert_eq!(disk(&proxy).await.objects, 1);
}
