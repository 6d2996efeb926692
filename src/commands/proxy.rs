//! The commands that talk to the running proxy: `reload`, `logs reopen`, `status`, `stats`,
//! `purge`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use canopy_config::control::{self, Command, ControlError, ReloadReply, ReopenReply, StatusReply};
use canopy_config::stats::{PeerState, StatsSnapshot};

use super::{not_running, not_running_because, Paths, UserError};

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
    println!("memory hits       {}", s.memory_hits);
    match &s.disk {
        None => println!("disk cache        off"),
        Some(d) => {
            if let Some(reason) = &d.closed {
                println!("disk cache        not in use: {reason}");
            }
            println!(
                "disk cache        {} objects ({} of {} bytes), {} hits",
                d.objects, d.bytes, d.capacity, d.hits_served
            );
            println!(
                "disk I/O          {} reads, {} writes, {} evictions, {} skipped",
                d.reads, d.writes, d.evictions, d.skipped
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
        if let Some(state) = peer.state {
            let replies: Vec<String> = peer
                .icp_replies
                .iter()
                .map(|(opcode, n)| format!("{opcode} {n}"))
                .collect();
            println!(
                "  ICP {} since {}: queries {}, replies {}, timeouts {}, late {}, avg {:.1} ms; hits served {}, false hits {}",
                if state == PeerState::Dead { "dead" } else { "up" },
                peer.state_since.as_deref().unwrap_or("-"),
                peer.icp_queries,
                replies.join(", "),
                peer.icp_timeouts,
                peer.icp_late_replies,
                peer.icp_reply_ms_avg,
                peer.hits_served,
                peer.false_hits
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `canopy purge URL`: a PURGE request to the running proxy's listener, as `squidclient -m
/// PURGE` sends it; the proxy answers 200 when it removed something, 404 when nothing was
/// stored.
pub(crate) async fn purge(paths: &Paths, url: &str) -> anyhow::Result<ExitCode> {
    let authority = url
        .strip_prefix("http://")
        .map(|rest| rest.split(['/', '?']).next().unwrap_or(""))
        .filter(|authority| !authority.is_empty())
        .ok_or_else(|| UserError(format!("{url:?} is not an http:// URL")))?;
    let running = control::call_typed::<StatusReply>(&paths.control, Command::Status)
        .await
        .map_err(not_running)?;
    let listener = listener_to_call(&running.http_listen)?;
    let status = send_purge(listener, url, authority).await.map_err(|e| {
        UserError(format!(
            "could not send PURGE to the proxy at {listener}: {e}"
        ))
    })?;
    match status {
        200 => println!("purged {url}"),
        404 => println!("{url} was not in the cache"),
        403 => {
            return Err(UserError(format!(
                "the proxy at {listener} refused PURGE from this host (403): add its address to purge_allowed_clients"
            ))
            .into())
        }
        other => {
            return Err(UserError(format!(
                "the proxy at {listener} answered PURGE with status {other}"
            ))
            .into())
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The address to reach the listener at: loopback when it listens on every address.
fn listener_to_call(http_listen: &str) -> Result<SocketAddr, UserError> {
    let mut addr: SocketAddr = http_listen.parse().map_err(|_| {
        UserError(format!(
            "the proxy reported a listener address that cannot be read: {http_listen:?}"
        ))
    })?;
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    Ok(addr)
}

/// Sends the request and reads the status code of the answer.
async fn send_purge(listener: SocketAddr, url: &str, authority: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(listener).await?;
    let request = format!(
        "PURGE {url} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let status_line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
    std::str::from_utf8(status_line)
        .ok()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the answer is not an HTTP response",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_on_every_address_is_called_on_loopback() {
        let called = |listen: &str| listener_to_call(listen).unwrap().to_string();
        assert_eq!(called("0.0.0.0:3128"), "127.0.0.1:3128");
        assert_eq!(called("[::]:3128"), "[::1]:3128");
        assert_eq!(called("10.0.0.5:8080"), "10.0.0.5:8080");
        assert!(listener_to_call("nowhere").is_err());
    }
}
