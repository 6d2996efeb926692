use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use xxhash_rust::xxh3::xxh3_64;

use super::reader::CHECK_WHOLE_UP_TO;
use super::*;

fn head(vary: Option<Vec<(HeaderName, Option<String>)>>) -> ObjectHead {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
    headers.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
    headers.insert("x-custom", HeaderValue::from_static("value"));
    let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
    ObjectHead {
        status: StatusCode::OK,
        headers,
        times: StoredTimes {
            request_time: t,
            response_time: t + Duration::from_millis(5),
        },
        vary,
    }
}

/// A body that can be made again from its URL and length, to check what is read back.
fn body(url: &str, len: usize) -> Vec<u8> {
    let seed = xxh3_64(url.as_bytes());
    (0..len)
        .map(|i| (seed.rotate_left((i % 64) as u32) as usize ^ (i / 64)) as u8)
        .collect()
}

/// Writes in pieces of an odd size, so frames are filled across several writes.
fn put(store: &DiskStore, url: &str, head: ObjectHead, body: &[u8]) -> Result<(), DiskError> {
    let mut writer = store.writer(url, head)?;
    for piece in body.chunks(10_007) {
        writer.write(piece)?;
    }
    writer.commit()
}

fn get(store: &DiskStore, url: &str) -> Option<Bytes> {
    let entry = store.lookup(url, &HeaderMap::new()).unwrap()?;
    Some(store.read(&entry).unwrap().read_all().unwrap())
}

fn open(dir: &Path, capacity: u64) -> DiskStore {
    DiskStore::open(dir, capacity).unwrap()
}

fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_in(&path));
        } else {
            found.push(path);
        }
    }
    found
}

fn object_file(store: &DiskStore, url: &str) -> std::path::PathBuf {
    let entry = store.lookup(url, &HeaderMap::new()).unwrap().unwrap();
    format::object_path(store.dir(), entry.record.id)
}

#[test]
fn objects_come_back_whole_with_their_heads_and_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [0, 1, 100, 64 * 1024, 200_000, 3 << 20];
    {
        let store = open(dir.path(), 64 << 20);
        for len in sizes {
            let url = format!("http://a/{len}");
            put(&store, &url, head(None), &body(&url, len)).unwrap();
        }
        for len in sizes {
            let url = format!("http://a/{len}");
            let entry = store.lookup(&url, &HeaderMap::new()).unwrap().unwrap();
            assert_eq!(entry.head(), &head(None));
            assert_eq!(entry.body_len(), len as u64);
            let mut reader = store.read(&entry).unwrap();
            let mut read = Vec::new();
            while let Some(chunk) = reader.next_chunk().unwrap() {
                assert!(chunk.len() as u64 <= format::CHUNK);
                read.extend_from_slice(&chunk);
            }
            assert_eq!(read, body(&url, len));
        }
        let stats = store.stats();
        assert_eq!((stats.objects, stats.writes, stats.reads), (6, 6, 6));
        let on_disk: u64 = files_in(&format::objects_dir(dir.path()))
            .iter()
            .map(|f| f.metadata().unwrap().len())
            .sum();
        assert!(stats.bytes > on_disk, "{} {on_disk}", stats.bytes);
        assert!(store
            .lookup("http://a/none", &HeaderMap::new())
            .unwrap()
            .is_none());
        assert_eq!(store.stats().misses, 1);
    }
    let store = open(dir.path(), 64 << 20);
    assert_eq!(store.stats().objects, 6);
    for len in sizes {
        let url = format!("http://a/{len}");
        assert_eq!(get(&store, &url).unwrap(), body(&url, len));
    }
    // A promoted object is the memory store's response.
    let entry = store
        .lookup("http://a/100", &HeaderMap::new())
        .unwrap()
        .unwrap();
    let bytes = store.read(&entry).unwrap().read_all().unwrap();
    let stored = entry.into_stored(bytes, &[]);
    assert_eq!(stored.body, body("http://a/100", 100));
    assert_eq!(stored.headers(), head(None).headers);
}

#[test]
fn an_abandoned_or_failed_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1 << 20);
    let mut writer = store.writer("http://a/", head(None)).unwrap();
    writer.write(&body("x", 100_000)).unwrap();
    drop(writer);
    assert!(store
        .lookup("http://a/", &HeaderMap::new())
        .unwrap()
        .is_none());
    let mut writer = store.writer("http://a/", head(None)).unwrap();
    let too_large = writer.write(&body("x", 2 << 20)).unwrap_err();
    assert!(matches!(too_large, DiskError::TooLarge { capacity, .. } if capacity == 1 << 20));
    assert_eq!(too_large.fault(), None);
    drop(writer);
    assert!(files_in(dir.path())
        .iter()
        .all(|f| f.ends_with("index.redb")));
    assert_eq!(store.stats().objects, 0);
}

#[test]
fn variants_are_kept_apart_and_removed_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1 << 20);
    let name = HeaderName::from_static("accept-encoding");
    let gzip = || Some(vec![(name.clone(), Some("gzip".to_owned()))]);
    put(&store, "http://a/", head(gzip()), b"gzip").unwrap();
    put(
        &store,
        "http://a/",
        head(Some(vec![(name.clone(), None)])),
        b"plain",
    )
    .unwrap();
    put(&store, "http://a/", head(gzip()), b"gzip again").unwrap();
    put(&store, "http://a/b", head(None), b"other").unwrap();
    let mut gzipped = HeaderMap::new();
    gzipped.insert(&name, HeaderValue::from_static("gzip"));
    let read = |req: &HeaderMap| {
        let entry = store.lookup("http://a/", req).unwrap()?;
        Some(store.read(&entry).unwrap().read_all().unwrap())
    };
    assert_eq!(read(&gzipped).unwrap(), "gzip again");
    assert_eq!(read(&HeaderMap::new()).unwrap(), "plain");
    assert_eq!(store.stats().objects, 3);
    let listed = store.list("http://a/", 10).unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed[0].head.vary.is_some() && listed[2].url == "http://a/b");
    assert_eq!(
        store.list("http://a/", 1).unwrap().len(),
        2,
        "a URL's variants"
    );
    assert_eq!(store.list("http://a/b", 10).unwrap().len(), 1);
    assert_eq!(store.remove("http://a/").unwrap(), 2);
    assert!(read(&gzipped).is_none());
    assert_eq!(get(&store, "http://a/b").unwrap(), "other");
    // A response without Vary stands for every request: it replaces all variants.
    put(&store, "http://c/", head(gzip()), b"gzip").unwrap();
    put(&store, "http://c/", head(None), b"plain").unwrap();
    assert_eq!(store.stats().objects, 2);
    assert_eq!(files_in(&format::objects_dir(dir.path())).len(), 2);
}

/// Flips one byte of a file.
fn corrupt(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x20], at).unwrap();
}

#[test]
fn a_corrupt_small_object_is_refused_before_any_byte_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 16 << 20);
    for (url, at) in [
        ("http://a/body", 5000),
        ("http://a/header", 20),
        ("http://a/sum", 32 + 65536 + 3),
    ] {
        put(&store, url, head(None), &body(url, 100_000)).unwrap();
        corrupt(&object_file(&store, url), at);
        let entry = store.lookup(url, &HeaderMap::new()).unwrap().unwrap();
        let error = store.read(&entry).err().unwrap();
        assert!(matches!(error, DiskError::Corrupt { .. }), "{error}");
        assert_eq!(error.fault(), Some(Fault::Corrupt));
        assert!(store.lookup(url, &HeaderMap::new()).unwrap().is_none());
    }
    let stats = store.stats();
    assert_eq!((stats.faults_corrupt, stats.objects), (3, 0));
    assert!(files_in(&format::objects_dir(dir.path())).is_empty());
}

#[test]
fn a_corrupt_large_object_stops_at_the_bad_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 16 << 20);
    let len = 2 * CHECK_WHOLE_UP_TO as usize;
    put(&store, "http://a/", head(None), &body("http://a/", len)).unwrap();
    let (offset, _) = format::frame_at(len as u64, 3);
    corrupt(&object_file(&store, "http://a/"), offset + 100);
    let entry = store
        .lookup("http://a/", &HeaderMap::new())
        .unwrap()
        .unwrap();
    let mut reader = store.read(&entry).unwrap();
    let expected = body("http://a/", len);
    for i in 0..3 {
        let chunk = reader.next_chunk().unwrap().unwrap();
        let start = i * format::CHUNK as usize;
        assert_eq!(chunk, expected[start..start + chunk.len()]);
    }
    let error = reader.next_chunk().unwrap_err();
    assert!(
        matches!(
            error,
            DiskError::Corrupt {
                what: Corruption::Chunk { chunk: 3 },
                ..
            }
        ),
        "{error}"
    );
    assert!(
        reader.next_chunk().is_err(),
        "a fault is not followed by an end"
    );
    assert!(store
        .lookup("http://a/", &HeaderMap::new())
        .unwrap()
        .is_none());
    assert_eq!(store.stats().faults_corrupt, 1);
}

#[test]
fn eviction_keeps_the_bound_and_the_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let capacity = 1 << 20;
    let store = open(dir.path(), capacity);
    let urls: Vec<_> = (0..100).map(|i| format!("http://a/{i:03}")).collect();
    for (i, url) in urls.iter().enumerate() {
        put(&store, url, head(None), &body(url, 30_000)).unwrap();
        // Object 0 is used all along.
        if i % 5 == 0 {
            assert!(get(&store, &urls[0]).is_some(), "{i}");
        }
    }
    let stats = store.stats();
    assert!(stats.bytes <= capacity, "{}", stats.bytes);
    assert!(stats.evictions >= 60, "{}", stats.evictions);
    let held = urls.iter().filter(|u| get(&store, u).is_some()).count() as u64;
    assert_eq!(held, stats.objects);
    assert!(held >= 25, "{held}");
    let on_disk: u64 = files_in(&format::objects_dir(dir.path()))
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(on_disk <= capacity);
    // Access times are kept in seconds, and written when the store closes.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(get(&store, &urls[0]).is_some());
    drop(store);
    // A smaller bound at the next open evicts down to it.
    let store = open(dir.path(), capacity / 4);
    assert!(store.stats().bytes <= capacity / 4);
    assert!(get(&store, &urls[0]).is_some());
}

#[test]
fn a_304_updates_the_stored_head_and_keeps_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1 << 20);
    put(&store, "http://a/", head(None), b"body").unwrap();
    let entry = store
        .lookup("http://a/", &HeaderMap::new())
        .unwrap()
        .unwrap();
    let mut merged = head(None);
    merged
        .headers
        .insert(header::ETAG, HeaderValue::from_static("\"v2\""));
    merged.times.response_time += Duration::from_secs(60);
    assert!(store.update_head(&entry, merged.clone()).unwrap());
    // The entry looked up before another write is stale: the write wins.
    put(&store, "http://a/", head(None), b"new body").unwrap();
    assert!(!store.update_head(&entry, head(None)).unwrap());
    let entry = store
        .lookup("http://a/", &HeaderMap::new())
        .unwrap()
        .unwrap();
    assert!(store.update_head(&entry, merged.clone()).unwrap());
    drop(store);
    let store = open(dir.path(), 1 << 20);
    let entry = store
        .lookup("http://a/", &HeaderMap::new())
        .unwrap()
        .unwrap();
    assert_eq!(entry.head(), &merged);
    assert_eq!(store.read(&entry).unwrap().read_all().unwrap(), "new body");
    assert_eq!(store.stats().objects, 1);
}

#[test]
fn another_format_is_discarded_never_read() {
    let dir = tempfile::tempdir().unwrap();
    put(&open(dir.path(), 1 << 20), "http://a/", head(None), b"body").unwrap();
    {
        let db = redb::Database::create(format::index_path(dir.path())).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(index::META)
            .unwrap()
            .insert("format", FORMAT_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    // Beside the store, a file of the administrator's is left alone.
    std::fs::write(dir.path().join("notes"), "mine").unwrap();
    let store = open(dir.path(), 1 << 20);
    assert!(get(&store, "http://a/").is_none());
    assert_eq!(store.stats().objects, 0);
    assert!(files_in(&format::objects_dir(dir.path())).is_empty());
    put(&store, "http://a/", head(None), b"again").unwrap();
    drop(store);
    // An index redb cannot read at all goes the same way.
    std::fs::write(format::index_path(dir.path()), vec![0x5a; 8192]).unwrap();
    let store = open(dir.path(), 1 << 20);
    assert!(get(&store, "http://a/").is_none());
    assert!(files_in(&format::objects_dir(dir.path())).is_empty());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes")).unwrap(),
        "mine"
    );
}

#[test]
fn torn_temporary_files_are_removed_and_committed_ones_moved_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), 1 << 20);
        put(&store, "http://a/", head(None), b"committed").unwrap();
        let file = object_file(&store, "http://a/");
        let id = store
            .lookup("http://a/", &HeaderMap::new())
            .unwrap()
            .unwrap()
            .record
            .id;
        // As if the move after the commit was lost in a crash.
        std::fs::rename(&file, format::temp_path(dir.path(), id)).unwrap();
        assert_eq!(get(&store, "http://a/").unwrap(), "committed");
    }
    let torn = format::temp_path(dir.path(), 999);
    std::fs::write(&torn, b"half an object").unwrap();
    std::fs::write(format::temp_dir(dir.path()).join("junk"), b"?").unwrap();
    let store = open(dir.path(), 1 << 20);
    assert!(files_in(&format::temp_dir(dir.path())).is_empty());
    assert_eq!(files_in(&format::objects_dir(dir.path())).len(), 1);
    assert_eq!(get(&store, "http://a/").unwrap(), "committed");
}

#[test]
fn a_missing_file_or_a_read_error_is_a_miss_and_a_fault() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1 << 20);
    put(&store, "http://a/gone", head(None), b"body").unwrap();
    put(&store, "http://a/unreadable", head(None), b"body").unwrap();
    std::fs::remove_file(object_file(&store, "http://a/gone")).unwrap();
    let unreadable = object_file(&store, "http://a/unreadable");
    std::fs::remove_file(&unreadable).unwrap();
    std::fs::create_dir(&unreadable).unwrap();
    for (url, op) in [
        ("http://a/gone", DiskOp::Open),
        ("http://a/unreadable", DiskOp::Read),
    ] {
        let entry = store.lookup(url, &HeaderMap::new()).unwrap().unwrap();
        let error = store.read(&entry).err().unwrap();
        let DiskError::Io {
            op: failed, path, ..
        } = &error
        else {
            panic!("{error}");
        };
        assert_eq!(*failed, op);
        assert!(path.starts_with(format::objects_dir(dir.path())), "{error}");
        assert!(store.lookup(url, &HeaderMap::new()).unwrap().is_none());
    }
    // Three: the two reads, and unlinking the directory that took a file's place.
    assert_eq!(store.stats().faults_io, 3);
    put(&store, "http://a/gone", head(None), b"back").unwrap();
    assert_eq!(get(&store, "http://a/gone").unwrap(), "back");
}

#[test]
fn a_directory_that_cannot_be_used_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be.
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let error = DiskStore::open(&file.join("cache"), 1 << 20).err().unwrap();
    assert!(
        matches!(&error, DiskError::Io { op: DiskOp::CreateDir, path, .. } if path.starts_with(&file)),
        "{error}"
    );
    // A read-only directory, where permissions apply (not to root).
    let read_only = dir.path().join("ro");
    std::fs::create_dir(&read_only).unwrap();
    set_mode(&read_only, 0o500);
    if std::fs::write(read_only.join("probe"), "").is_err() {
        let error = DiskStore::open(&read_only, 1 << 20).err().unwrap();
        assert_eq!(error.fault(), Some(Fault::Io), "{error}");
    }
    set_mode(&read_only, 0o700);
    // A directory that stops being writable while open: writes fail, reads go on.
    let cache = dir.path().join("cache");
    let store = open(&cache, 1 << 20);
    put(&store, "http://a/", head(None), b"body").unwrap();
    std::fs::remove_dir_all(format::temp_dir(&cache)).unwrap();
    std::fs::write(format::temp_dir(&cache), "").unwrap();
    let error = store.writer("http://b/", head(None)).err().unwrap();
    assert!(
        matches!(
            &error,
            DiskError::Io {
                op: DiskOp::CreateFile,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(store.stats().faults_io, 1);
    assert_eq!(get(&store, "http://a/").unwrap(), "body");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A tmpfs of 16 MiB, when this process may mount one (root); unmounted when dropped.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    /// `None` (the full-disk case untested, said on stderr) only outside CI: under
    /// `CI=true` a tmpfs that cannot be mounted fails the test.
    fn mount() -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|out| out.status.success());
        if !mounted {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: no tmpfs could be mounted for the full-disk case (run the tests as root)"
            );
            eprintln!("no tmpfs could be mounted (not root?): the full-disk case is not tested");
        }
        mounted.then_some(SmallFs(dir))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_refuses_the_write_and_the_store_goes_on() {
    let Some(fs) = SmallFs::mount() else {
        return;
    };
    let dir = fs.0.path().join("cache");
    let store = open(&dir, 64 << 20);
    put(&store, "http://a/small", head(None), b"small").unwrap();
    let error = put(&store, "http://a/big", head(None), &body("big", 32 << 20)).unwrap_err();
    assert_eq!(error.fault(), Some(Fault::Full), "{error}");
    assert!(
        matches!(
            &error,
            DiskError::Io {
                op: DiskOp::Write,
                ..
            }
        ),
        "{error}"
    );
    assert!(files_in(&format::temp_dir(&dir)).is_empty());
    assert!(store.stats().faults_full >= 1);
    assert_eq!(get(&store, "http://a/small").unwrap(), "small");
    put(
        &store,
        "http://a/after",
        head(None),
        &body("after", 500_000),
    )
    .unwrap();
    assert_eq!(
        get(&store, "http://a/after").unwrap(),
        body("after", 500_000)
    );
    drop(store);
    assert_eq!(open(&dir, 64 << 20).stats().objects, 2);
}

const CRASH_DIR: &str = "CANOPY_DISK_CRASH_DIR";
const CRASH_URLS: u64 = 200;

fn crash_url(i: u64) -> String {
    format!("http://crash/{}", i % CRASH_URLS)
}

/// The crash test's child (the same test, run again with `CRASH_DIR` set): writes and
/// removes objects from four threads until it is killed.
fn crash_child(dir: &Path) {
    let store = open(dir, 16 << 20);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let start = xxh3_64(&format::seconds_now().to_le_bytes()) ^ t;
                for i in start.. {
                    let url = crash_url(i);
                    if i % 7 == 0 {
                        store.remove(&url).unwrap();
                        continue;
                    }
                    let len = (i.wrapping_mul(7919) % 300_000) as usize;
                    put(&store, &url, head(None), &body(&url, len)).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn a_crash_at_any_moment_leaves_only_whole_objects() {
    if let Some(dir) = std::env::var_os(CRASH_DIR) {
        return crash_child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seen = 0;
    for round in 0..6u64 {
        let mut child = Command::new(&exe)
            .args([
                "cache::disk::tests::a_crash_at_any_moment_leaves_only_whole_objects",
                "--exact",
                "--nocapture",
            ])
            .env(CRASH_DIR, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Killed some time after its writes began, however slow the machine is to start it.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let writing = || {
            std::fs::read_dir(format::temp_dir(dir.path())).is_ok_and(|mut d| d.next().is_some())
        };
        while !writing() {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never began writing"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let wait = 100 + xxh3_64(&[round as u8, std::process::id() as u8]) % 700;
        std::thread::sleep(Duration::from_millis(wait));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let store = open(dir.path(), 16 << 20);
        assert!(files_in(&format::temp_dir(dir.path())).is_empty());
        let mut found = 0;
        for i in 0..CRASH_URLS {
            let url = crash_url(i);
            let Some(entry) = store.lookup(&url, &HeaderMap::new()).unwrap() else {
                continue;
            };
            let len = entry.body_len() as usize;
            let read = store.read(&entry).unwrap().read_all().unwrap();
            assert_eq!(read, body(&url, len), "{url} after round {round}");
            found += 1;
        }
        assert_eq!(store.stats().objects, found);
        assert_eq!(store.stats().faults_corrupt + store.stats().faults_io, 0);
        seen += found;
    }
    assert!(seen > 0, "the child wrote nothing before it was killed");
}

#[test]
fn a_full_disk_at_the_index_commit_does_not_stop_the_store() {
    let Some(fs) = SmallFs::mount() else {
        return;
    };
    let dir = fs.0.path().join("cache");
    let store = open(&dir, 64 << 20);
    put(&store, "http://a/first", head(None), b"first").unwrap();
    // The disk filled but for a few pages: the object's file fits, and the index's
    // commit runs out of room.
    let filler = fs.0.path().join("filler");
    let mut failed_ops = Vec::new();
    for spare in 1..=16u64 {
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while std::io::Write::write_all(&mut file, &block).is_ok() {}
        let len = file.metadata().unwrap().len();
        file.set_len(len.saturating_sub(spare * 4096)).unwrap();
        drop(file);
        let url = format!("http://a/{spare}");
        if let Err(e) = put(&store, &url, head(None), &body(&url, 100)) {
            assert_eq!(e.fault(), Some(Fault::Full), "{e}");
            failed_ops.push(match e {
                DiskError::Io { op, .. } | DiskError::Index { op, .. } => op,
                other => panic!("{other}"),
            });
        }
    }
    assert!(failed_ops.contains(&DiskOp::WriteIndex), "{failed_ops:?}");
    std::fs::remove_file(&filler).unwrap();
    put(&store, "http://a/after", head(None), b"after").unwrap();
    assert_eq!(get(&store, "http://a/after").unwrap(), "after");
    assert_eq!(get(&store, "http://a/first").unwrap(), "first");
    drop(store);
    let store = open(&dir, 64 << 20);
    assert_eq!(get(&store, "http://a/after").unwrap(), "after");
    assert!(files_in(&format::temp_dir(&dir)).is_empty());
}

/// A head fresh for an hour from now.
fn fresh_head(vary: Option<Vec<(HeaderName, Option<String>)>>) -> ObjectHead {
    let mut head = head(vary);
    head.headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    let now = std::time::SystemTime::now();
    head.times = StoredTimes {
        request_time: now,
        response_time: now,
    };
    head
}

#[test]
fn freshness_for_icp_is_known_without_a_read_and_leaves_with_the_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 16 << 20);
    put(&store, "http://a/fresh", fresh_head(None), b"x").unwrap();
    put(&store, "http://a/stale", head(None), b"x").unwrap();
    let varies = vec![(header::ACCEPT_LANGUAGE, Some("en".to_owned()))];
    put(&store, "http://a/varies", fresh_head(Some(varies)), b"x").unwrap();
    let left = store.fresh_for("http://a/fresh").unwrap();
    assert!(left > Duration::from_secs(3500), "{left:?}");
    assert_eq!(store.fresh_for("http://a/stale"), None);
    assert_eq!(
        store.fresh_for("http://a/varies"),
        None,
        "ICP asks with no headers"
    );
    assert_eq!(store.fresh_for("http://a/never"), None);
    drop(store);

    // Learnt from the index after a reopen, and gone with a removal.
    let store = open(dir.path(), 16 << 20);
    assert_eq!(store.fresh_for("http://a/fresh"), None, "not yet learnt");
    store.learn_freshness().unwrap();
    assert!(store.fresh_for("http://a/fresh").is_some());
    store.remove("http://a/fresh").unwrap();
    assert_eq!(store.fresh_for("http://a/fresh"), None);
}
