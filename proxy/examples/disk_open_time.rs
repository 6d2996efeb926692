//! How long the disk cache takes to open when it holds many small objects.
//!
//! `cargo run -p canopy-proxy --example disk_open_time -- DIR [COUNT]` writes COUNT
//! (100,000 by default) objects of 1 KiB into DIR from 32 threads, unless it holds them
//! already, then opens the store three times and prints how long each open took.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use canopy_proxy::cache::disk::{DiskError, DiskStore, ObjectHead};
use canopy_proxy::cache::policy::StoredTimes;
use http::{header, HeaderMap, HeaderValue, StatusCode};

const THREADS: u64 = 32;

fn head() -> ObjectHead {
    let mut headers = HeaderMap::new();
    let fields = [
        (header::DATE, "Sun, 29 Nov 2026 02:00:00 GMT"),
        (header::SERVER, "origin"),
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CONTENT_LENGTH, "1024"),
        (header::LAST_MODIFIED, "Sat, 28 Nov 2026 02:00:00 GMT"),
        (header::ETAG, "\"5f3a-1024\""),
        (header::CACHE_CONTROL, "public, max-age=86400"),
        (header::ACCEPT_RANGES, "bytes"),
    ];
    for (name, value) in fields {
        headers.insert(name, HeaderValue::from_static(value));
    }
    let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    ObjectHead {
        status: StatusCode::OK,
        headers,
        times: StoredTimes {
            request_time: t,
            response_time: t,
        },
        vary: None,
    }
}

fn fill(store: &DiskStore, count: u64) -> Result<(), DiskError> {
    let next = Arc::new(AtomicU64::new(store.stats().objects));
    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (store, next) = (store.clone(), next.clone());
            std::thread::spawn(move || -> Result<(), DiskError> {
                let body = [b'x'; 1024];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok(());
                    }
                    let url = format!("http://origin.example/objects/{i:08}.html");
                    let mut writer = store.writer(&url, head())?;
                    writer.write(&body)?;
                    writer.commit()?;
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a writer thread panicked")?;
    }
    println!(
        "wrote up to {count} objects in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<(), DiskError> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: disk_open_time DIR [COUNT]"));
    let count = args
        .next()
        .map_or(100_000, |n| n.parse().expect("COUNT is a number"));
    let capacity = 64 << 30;
    let store = DiskStore::open(&dir, capacity)?;
    if store.stats().objects < count {
        fill(&store, count)?;
    }
    drop(store);
    for _ in 0..3 {
        let started = Instant::now();
        let store = DiskStore::open(&dir, capacity)?;
        let took = started.elapsed();
        let stats = store.stats();
        println!(
            "open: {} objects, {} bytes, in {:.1} ms",
            stats.objects,
            stats.bytes,
            took.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
