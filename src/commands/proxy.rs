//! The commands that talk to the running proxy: `reload`, `logs reopen`, `status`, `stats`,
//! `purge`.

use std::process::ExitCode;

use canopy_config::control::{self, Command, ControlError, ReloadReply, ReopenReply, StatusReply};
use canopy_config::purge::{PurgeError, Purged};
use canopy_config::stats::{DigestSnapshot, OwnDigestSnapshot, PeerState, StatsSnapshot};

use super::{not_running, not_running_because, percent, Paths, UserError};

pub(crate) async fn reload(paths: &Paths) -> anyhow::Result<ExitCode> {
    match control::call_typed::<ReloadReply>(&paths.control, Command::Reload).await {
        Ok(reply) if reply.changed => {
            println!(
                "config version {} applied in {} ms",
                reply.config_version, reply.elapsed_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(reply) => {
            println!(
                "config version {} is already in force",
                reply.config_version
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ControlError::Refused(reason)) => {
            eprintln!("canopy: reload refused: {reason}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(not_running(e)),
    }
}

pub(crate) async fn reopen_logs(paths: &Paths) -> anyhow::Result<ExitCode> {
    match control::call_typed::<ReopenReply>(&paths.control, Command::Reopen).await {
        Ok(ReopenReply {
            access_log: Some(path),
        }) => println!("access log {path} reopened"),
        Ok(ReopenReply { access_log: None }) => {
            println!("the access log is off (access_log is empty); nothing to reopen")
        }
        Err(ControlError::Refused(reason)) => return Err(UserError(reason).into()),
        Err(e) => return Err(not_running(e)),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn status(paths: &Paths) -> anyhow::Result<ExitCode> {
    let supervisor = canopy_config::supervision::State::read(&paths.data_dir);
    if let Some(supervisor) = &supervisor {
        println!("canopy run (pid {}) supervises:", supervisor.pid);
        for process in &supervisor.processes {
            println!("  {process}");
        }
    }
    let status: StatusReply = match control::call_typed(&paths.control, Command::Status).await {
        Ok(status) => status,
        Err(ControlError::NotRunning(_)) if supervisor.is_some() => {
            return Err(UserError(
                "the proxy is not answering now; canopy run starts it again".to_owned(),
            )
            .into())
        }
        Err(e) => return Err(not_running_because(paths, e).await),
    };
    println!(
        "proxy running: pid {}, up {} s",
        status.pid, status.uptime_s
    );
    println!("config version in force: {}", status.config_version);
    if let Some(rejected) = &status.rejected_version {
        println!(
            "config version {} was rejected: {}",
            rejected.id, rejected.reason
        );
    }
    println!("listening on {}", status.http_listen);
    if let Some(icp) = &status.icp_listen {
        println!("ICP on {icp}");
    }
    if let Some(down) = &status.database_down {
        println!(
            "node {}: the database has been unreachable since {} ({}); running on config \
             version {}, the one last applied here, until it is back",
            status.node, down.since, down.error, status.config_version
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn stats(paths: &Paths, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let reply = control::call(&paths.control, Command::Stats)
            .await
            .map_err(not_running)?;
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s: StatsSnapshot = control::call_typed(&paths.control, Command::Stats)
        .await
        .map_err(not_running)?;
    println!("requests          {}", s.requests);
    println!("hits (fresh)      {}", s.hits_fresh);
    println!("hits (stale)      {}", s.hits_stale);
    println!("hits (revalidated) {}", s.hits_revalidated);
    println!("misses            {}", s.misses);
    println!("uncacheable       {}", s.uncacheable);
    println!("hit ratio         {:.1} %", s.hit_ratio * 100.0);
    println!("byte hit ratio    {:.1} %", s.byte_hit_ratio * 100.0);
    println!("bytes from cache  {}", s.bytes_from_cache);
    println!("bytes upstream    {}", s.bytes_from_upstream);
    println!("objects held      {} ({} bytes)", s.objects, s.bytes_held);
    println!(
        "memory hits       {} ({} of requests)",
        s.memory_hits,
        percent(s.memory_hit_ratio)
    );
    match &s.disk {
        None => println!("disk cache        off"),
        Some(d) => {
            if let Some(reason) = &d.closed {
                println!("disk cache        not in use: {reason}");
            }
            println!(
                "disk cache        {} objects ({} of {} bytes), {} hits ({} of requests), {}",
                d.objects,
                d.bytes,
                d.capacity,
                d.hits_served,
                percent(d.hit_ratio),
                d.state.as_str()
            );
            if let Some(fault) = &d.last_fault {
                println!("disk last fault   {}: {}", fault.at, fault.reason);
            }
            println!(
                "disk I/O          {} reads, {} writes ({} not written), {} evictions, {} skipped",
                d.reads, d.writes, d.writes_dropped, d.evictions, d.skipped
            );
            println!(
                "disk faults       full {}, I/O {}, corrupt {}",
                d.faults_full, d.faults_io, d.faults_corrupt
            );
        }
    }
    println!("denied clients    {}", s.denied_clients);
    println!("denied destinations {}", s.denied_destinations);
    println!("purges            {}", s.purges);
    println!("retries           {}", s.retries);
    let timeouts: Vec<String> = s
        .timeouts
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    println!("timeouts          {}", timeouts.join(", "));
    let answers: Vec<String> = s
        .icp_answers
        .iter()
        .map(|(opcode, n)| format!("{opcode} {n}"))
        .collect();
    println!(
        "ICP queries in    {} (answered {}; dropped {}; replies ignored {})",
        s.icp_queries_received,
        answers.join(", "),
        s.icp_dropped,
        s.icp_replies_ignored
    );
    let h = &s.htcp;
    println!(
        "HTCP in           TST {} (HIT {}, MISS {}), CLR {} (purged {}); denied {}; dropped {}; replies ignored {}; CLR sent {}, forwarded {}",
        h.tst_received,
        h.answered_hit,
        h.answered_miss,
        h.clr_received,
        h.clr_purged,
        h.denied,
        h.dropped,
        h.replies_ignored,
        h.clr_sent,
        h.clr_forwarded
    );
    println!(
        "cache digest      {}",
        own_digest_text(s.own_digest.as_ref())
    );
    for peer in &s.peers {
        println!(
            "peer {:<26} {} fetches {} failures {} bytes {}{}",
            peer.name,
            if peer.health.down { "DOWN" } else { "up" },
            peer.fetches,
            peer.failures,
            peer.bytes,
            peer.last_failure
                .as_ref()
                .map(|f| format!(" (last failure {}: {})", f.at, f.reason))
                .unwrap_or_default()
        );
        if peer.health.down {
            println!("  {}", super::routing::down_text(&peer.health));
        }
        if let Some(state) = peer.state {
            let replies: Vec<String> = peer
                .icp_replies
                .iter()
                .map(|(opcode, n)| format!("{opcode} {n}"))
                .collect();
            println!(
                "  ICP {} since {}: queries {}, replies {}, timeouts {}, late {}, avg {:.1} ms; hits served {}; HIT_OBJ sent {}, received {}",
                if state == PeerState::Dead { "dead" } else { "up" },
                peer.state_since.as_deref().unwrap_or("-"),
                peer.icp_queries,
                replies.join(", "),
                peer.icp_timeouts,
                peer.icp_late_replies,
                peer.icp_reply_ms_avg,
                peer.hits_served,
                peer.icp_hit_obj_sent,
                peer.icp_hit_obj_received,
            );
        }
        if peer.htcp_queries > 0 {
            println!(
                "  HTCP: TST queries {}, HIT {}, MISS {}, timeouts {}",
                peer.htcp_queries, peer.htcp_hits, peer.htcp_misses, peer.htcp_timeouts,
            );
        }
        let by_method: Vec<String> = peer
            .false_hits_by_method()
            .iter()
            .map(|(method, n)| format!("{} {n}", method.to_uppercase()))
            .collect();
        println!(
            "  false hits {} ({})",
            peer.false_hits,
            by_method.join(", ")
        );
        if let Some(digest) = &peer.digest {
            println!("  {}", digest_text(digest, peer.false_hits_digest));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// This proxy's own cache digest as `canopy stats` shows it.
fn own_digest_text(d: Option<&OwnDigestSnapshot>) -> String {
    let Some(d) = d else {
        return "none (digest_generation off, or not built yet)".to_owned();
    };
    format!(
        "{} entries (capacity {}, {} bits each), {} bytes, {:.1}% of bits on; built {} in {} ms, \
         modified {}, expires {}; served {}, not modified {}",
        d.entries,
        d.capacity,
        d.bits_per_entry,
        d.size,
        d.fill_percent,
        d.built_at,
        d.build_ms,
        d.modified_at,
        d.expires_at,
        d.served,
        d.not_modified
    )
}

/// A peer's cache digest as `canopy stats` shows it.
fn digest_text(d: &DigestSnapshot, false_hits: u64) -> String {
    let held = match d.age_s {
        Some(age) => format!(
            "{} bytes, {} entries (capacity {}), {:.1}% of bits on, {age} s old, expires {}",
            d.size,
            d.entries,
            d.capacity,
            d.fill_percent,
            d.expires_at.as_deref().unwrap_or("-")
        ),
        None => "none held".to_owned(),
    };
    format!(
        "digest: {held}; last fetch {} ({}), next {}; fetches {} (not modified {}), failed {}; false hits {false_hits}",
        d.last_fetch_at,
        d.last_fetch_outcome,
        d.next_fetch_at.as_deref().unwrap_or("-"),
        d.fetches,
        d.not_modified,
        d.fetch_failures
    )
}

/// `canopy purge URL`: a PURGE request to the running proxy's listener, as `squidclient -m
/// PURGE` sends it.
pub(crate) async fn purge(paths: &Paths, url: &str) -> anyhow::Result<ExitCode> {
    match canopy_config::purge::purge(&paths.control, url).await {
        Ok(Purged::Removed) => println!("purged {url}"),
        Ok(Purged::NotCached) => println!("{url} was not in the cache"),
        Err(PurgeError::Control(e)) => return Err(not_running(e)),
        Err(e) => return Err(UserError(e.to_string()).into()),
    }
    Ok(ExitCode::SUCCESS)
}
