//! `canopy cache list` and `canopy cache stats`: what the running proxy holds, URL by URL
//! (as Squid's `mgr:objects`), and each tier's size, hits and faults (as `mgr:storedir`).

use std::process::ExitCode;

use canopy_config::control::{self, CacheListReply, CachedUrl, Command, MAX_CACHE_LIST};
use canopy_config::stats::{DiskSnapshot, StatsSnapshot, StoreState};

use super::{not_running, percent, table, Paths};

pub(crate) async fn list(
    paths: &Paths,
    prefix: &str,
    limit: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let command = Command::CacheList {
        prefix: prefix.to_owned(),
        limit: Some(limit),
    };
    let reply: CacheListReply = control::call_typed(&paths.control, command)
        .await
        .map_err(not_running)?;
    if let Some(why) = &reply.disk_unlisted {
        eprintln!("canopy: warning: the disk tier's URLs are not listed: {why}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(ExitCode::SUCCESS);
    }
    if reply.urls.is_empty() {
        match prefix {
            "" => println!("the cache holds nothing"),
            _ => println!("no URL held starts with {prefix}"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", url_table(&reply.urls));
    if reply.truncated {
        println!(
            "# the first {} URLs; more match: give a longer prefix, or --limit (at most {MAX_CACHE_LIST})",
            reply.limit
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per URL, the URL last since it is the long one; counts to the right.
fn url_table(urls: &[CachedUrl]) -> String {
    let header = [
        "TIER", "STATUS", "VARIANTS", "BYTES", "STORED", "AGE", "FRESH", "URL",
    ];
    let rows: Vec<Vec<String>> = urls
        .iter()
        .map(|u| {
            vec![
                u.tier.as_str().to_owned(),
                u.status.to_string(),
                u.variants.to_string(),
                u.bytes.to_string(),
                u.stored_at.clone(),
                format!("{} s", u.age_s),
                match u.fresh_for_s {
                    0 => "stale".to_owned(),
                    s => format!("{s} s more"),
                },
                u.url.clone(),
            ]
        })
        .collect();
    table(&header, &rows, |i| matches!(i, 2 | 3 | 5))
}

pub(crate) async fn stats(paths: &Paths, json: bool) -> anyhow::Result<ExitCode> {
    let s: StatsSnapshot = control::call_typed(&paths.control, Command::Stats)
        .await
        .map_err(not_running)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&figures(&s))?);
    } else {
        print!("{}", stats_text(&s));
    }
    Ok(ExitCode::SUCCESS)
}

fn hits(s: &StatsSnapshot) -> u64 {
    s.hits_fresh + s.hits_stale + s.hits_revalidated
}

/// The figures of the snapshot that are the cache's, by tier; `"disk": null` when off.
fn figures(s: &StatsSnapshot) -> serde_json::Value {
    serde_json::json!({
        "requests": s.requests,
        "hits": hits(s),
        "hit_ratio": s.hit_ratio,
        "memory": {
            "objects": s.objects,
            "bytes": s.bytes_held,
            "capacity": s.memory_capacity,
            "hits": s.memory_hits,
            "hit_ratio": s.memory_hit_ratio,
            "evictions": s.memory_evictions,
        },
        "disk": s.disk,
    })
}

fn stats_text(s: &StatsSnapshot) -> String {
    let used = |bytes: u64, capacity: u64| match capacity {
        0 => format!("{bytes}"),
        _ => format!(
            "{bytes} of {capacity} ({})",
            percent(bytes as f64 / capacity as f64)
        ),
    };
    let mut out = format!(
        "all tiers\n  requests     {}\n  hits         {} ({} of requests)\n",
        s.requests,
        hits(s),
        percent(s.hit_ratio)
    );
    out += &format!(
        "memory (cache_mem)\n  objects      {}\n  bytes        {}\n  hits         {} ({} of requests)\n  evictions    {}\n",
        s.objects,
        used(s.bytes_held, s.memory_capacity),
        s.memory_hits,
        percent(s.memory_hit_ratio),
        s.memory_evictions
    );
    let Some(d) = &s.disk else {
        out += "disk (cache_dir)\n  state        off\n";
        return out;
    };
    out += &disk_text(d, used(d.bytes, d.capacity));
    out
}

fn disk_text(d: &DiskSnapshot, used: String) -> String {
    let state = match (d.state, &d.closed) {
        (StoreState::Closed, Some(why)) => format!("closed: {why}"),
        (state, _) => state.as_str().to_owned(),
    };
    let mut out = format!(
        "disk (cache_dir)\n  state        {state}\n  objects      {}\n  bytes        {used}\n  hits         {} ({} of requests)\n  reads        {}\n  writes       {}\n  evictions    {}\n  skipped      {} (the disk queue full)\n  not written  {} (too many writes under way)\n  faults       full {}, I/O {}, corrupt {}\n",
        d.objects,
        d.hits_served,
        percent(d.hit_ratio),
        d.reads,
        d.writes,
        d.evictions,
        d.skipped,
        d.writes_dropped,
        d.faults_full,
        d.faults_io,
        d.faults_corrupt
    );
    if let Some(fault) = &d.last_fault {
        out += &format!("  last fault   {}: {}\n", fault.at, fault.reason);
    }
    out
}
