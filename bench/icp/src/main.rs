//! `bench-icp`: how fast Canopy's ICP responder answers, against Squid's, on this machine in
//! one run. Both run as real processes on loopback (Canopy on 127.0.0.1, Squid on
//! 127.0.0.2, since Squid ignores ICP from its own address); one client keeps a fixed
//! number of queries in flight, half for an object each holds (HIT) and half for one
//! neither holds (MISS), and measures answers per second and the time to each reply.
//! The run is bounded: a fixed number of queries, and a deadline.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use canopy_config::versions::Db;
use canopy_proxy::icp::codec::{IcpMessage, IcpOpcode};

#[derive(Parser)]
struct Args {
    /// The canopy-proxy binary to measure (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/canopy-proxy")]
    canopy_proxy: PathBuf,
    #[arg(long, default_value = "/usr/sbin/squid")]
    squid: PathBuf,
    /// Queries measured per proxy, after a tenth as many to warm up (a round of 20,000 lasted
    /// a fifth of a second, too short to be steady on a shared machine).
    #[arg(long, default_value_t = 200_000)]
    queries: u32,
    /// Rounds per proxy (alternating); the median round is reported.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Queries kept in flight at once.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Write the result into this Markdown file (its ICP section is replaced).
    #[arg(long)]
    write: Option<PathBuf>,
}

const SQUID_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// No reply within this long counts as lost.
const REPLY_LIMIT: Duration = Duration::from_secs(1);
/// The whole run must end within this long.
const RUN_LIMIT: Duration = Duration::from_secs(120);

struct Measured {
    answers_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    lost: u32,
    hits: u32,
}

/// Kills the process when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run = tokio::time::timeout(RUN_LIMIT, bench(&args));
    let report = run
        .await
        .context("the benchmark ran past its time limit")??;
    println!("{report}");
    if let Some(path) = &args.write {
        write_section(path, &report)?;
        println!("written to {}", path.display());
    }
    Ok(())
}

async fn bench(args: &Args) -> anyhow::Result<String> {
    let origin = start_origin().await?;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;

    let canopy_icp = free_udp(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
    let (canopy_http, _canopy) = start_canopy(&args.canopy_proxy, dir.path(), canopy_icp).await?;
    let squid_icp = free_udp(IpAddr::V4(SQUID_IP))?;
    let (squid_http, _squid) = start_squid(&args.squid, dir.path(), squid_icp).await?;

    let held = format!("http://{origin}/held");
    let missing = format!("http://{origin}/missing");
    for proxy in [canopy_http, squid_http] {
        fetch_through(proxy, &held).await?;
    }
    let canopy = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), canopy_icp);
    let squid = SocketAddr::new(IpAddr::V4(SQUID_IP), squid_icp);
    let proxies = [("Canopy", canopy), ("Squid 5.7", squid)];
    for (_, target) in proxies {
        measure(target, &held, &missing, args.queries / 10, args.window).await?;
    }
    // Rounds alternate between the two, so a busy moment of the machine hits both alike.
    let mut rounds: Vec<[Measured; 2]> = Vec::new();
    for _ in 0..args.rounds {
        let canopy = measure(canopy, &held, &missing, args.queries, args.window).await?;
        let squid = measure(squid, &held, &missing, args.queries, args.window).await?;
        for (name, m) in [(proxies[0].0, &canopy), (proxies[1].0, &squid)] {
            if m.hits == 0 {
                bail!("{name} never answered HIT for an object it holds");
            }
        }
        rounds.push([canopy, squid]);
    }
    Ok(report(args, &rounds))
}

/// The round whose throughput is the median, for one proxy.
fn median(rounds: &[[Measured; 2]], proxy: usize) -> &Measured {
    let mut sorted: Vec<&Measured> = rounds.iter().map(|r| &r[proxy]).collect();
    sorted.sort_by(|a, b| a.answers_per_s.total_cmp(&b.answers_per_s));
    sorted[sorted.len() / 2]
}

fn report(args: &Args, rounds: &[[Measured; 2]]) -> String {
    let mut text = String::from(
        "## ICP responder: Canopy against Squid\n\n\
         Command: `cargo build --release --workspace --bins && \
         target/release/bench-icp --write BENCHMARKS.md`\n\n",
    );
    text += &format!(
        "{} rounds of {} queries per proxy, alternating, on loopback, {} in flight, half for \
         an object held (HIT), half for one not held (MISS); {} cores shared with the client. \
         Load average when the run began: {} (other work on the machine makes the figures \
         noisy; compare the round-by-round ratios). The round with the median throughput of \
         each proxy:\n\n",
        args.rounds,
        args.queries,
        args.window,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        load_average()
    );
    text += "| proxy | answers/s | reply p50 | reply p99 | HIT answers | lost |\n\
             |---|---:|---:|---:|---:|---:|\n";
    let (canopy, squid) = (median(rounds, 0), median(rounds, 1));
    for (name, m) in [("Canopy", canopy), ("Squid 5.7", squid)] {
        text += &format!(
            "| {name} | {:.0} | {:.0} µs | {:.0} µs | {} | {} |\n",
            m.answers_per_s, m.p50_us, m.p99_us, m.hits, m.lost
        );
    }
    let ratios: Vec<String> = rounds
        .iter()
        .map(|[c, s]| format!("{:.2}", c.answers_per_s / s.answers_per_s))
        .collect();
    text += &format!(
        "\nCanopy / Squid: answers per second × {:.2}, median reply time × {:.2}, \
         p99 reply time × {:.2}. Throughput ratio round by round: {}.\n",
        canopy.answers_per_s / squid.answers_per_s,
        canopy.p50_us / squid.p50_us,
        canopy.p99_us / squid.p99_us,
        ratios.join(", ")
    );
    text
}

/// The one-minute load average, as the kernel reports it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Replaces (or appends) the section this benchmark writes.
fn write_section(path: &Path, report: &str) -> anyhow::Result<()> {
    const BEGIN: &str = "<!-- bench-icp begin -->";
    const END: &str = "<!-- bench-icp end -->";
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".to_owned());
    let section = format!("{BEGIN}\n{report}{END}\n");
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!(
                "{}{section}{}",
                &old[..begin],
                old[end + END.len()..].trim_start_matches('\n')
            )
        }
        _ => format!("{old}{section}"),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

/// Sends queries, `window` at a time, alternating the two URLs.
async fn measure(
    target: SocketAddr,
    held: &str,
    missing: &str,
    queries: u32,
    window: usize,
) -> anyhow::Result<Measured> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let mut sent_at = std::collections::HashMap::new();
    let mut latencies = Vec::with_capacity(queries as usize);
    let (mut next, mut lost, mut hits) = (0u32, 0u32, 0u32);
    let mut buffer = [0u8; 2048];
    let started = Instant::now();
    while next < queries || !sent_at.is_empty() {
        while next < queries && sent_at.len() < window {
            let url = if next % 2 == 0 { held } else { missing };
            let datagram = IcpMessage::query(next, url).encode()?;
            socket.send_to(&datagram, target).await?;
            sent_at.insert(next, Instant::now());
            next += 1;
        }
        match tokio::time::timeout(REPLY_LIMIT, socket.recv_from(&mut buffer)).await {
            Ok(received) => {
                let (len, _) = received?;
                let Ok(reply) = IcpMessage::decode(&buffer[..len]) else {
                    continue;
                };
                if let Some(at) = sent_at.remove(&reply.request_number) {
                    latencies.push(at.elapsed());
                    if reply.opcode == IcpOpcode::Hit {
                        hits += 1;
                    }
                }
            }
            Err(_) => {
                lost += sent_at.len() as u32;
                sent_at.clear();
            }
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1e6)
            .unwrap_or(f64::NAN)
    };
    Ok(Measured {
        answers_per_s: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
        lost,
        hits,
    })
}

fn free_udp(ip: IpAddr) -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind((ip, 0))?.local_addr()?.port())
}

fn free_tcp(ip: IpAddr) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// An origin whose every answer is cacheable for an hour.
async fn start_origin() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\nDate: {}\r\nContent-Length: 5\r\n\
                     Cache-Control: max-age=3600\r\nConnection: close\r\n\r\nhello",
                    httpdate::fmt_http_date(std::time::SystemTime::now())
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(addr)
}

/// One GET through a proxy, so it holds the object.
async fn fetch_through(proxy: SocketAddr, url: &str) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(proxy).await?;
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("");
    stream
        .write_all(
            format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    if !response.starts_with(b"HTTP/1.1 200") {
        bail!(
            "{proxy} did not fetch {url}: {}",
            String::from_utf8_lossy(&response)
        );
    }
    Ok(())
}

async fn wait_for_port(addr: SocketAddr, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).await.is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited while starting: {status}");
        }
        if Instant::now() > deadline {
            bail!("{what} did not start listening on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn start_canopy(
    binary: &Path,
    dir: &Path,
    icp_port: u16,
) -> anyhow::Result<(SocketAddr, Running)> {
    let http = free_tcp(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
    let db_path = dir.join("canopy.db");
    let db = Db::open(&db_path).await?;
    let mut config = db.latest().await?.config;
    config
        .set_all([
            ("bind_address", "127.0.0.1"),
            ("http_port", http.to_string().as_str()),
            ("icp_mode", "receive"),
            ("icp_port", icp_port.to_string().as_str()),
            ("icp_allowed_clients", "127.0.0.0/8"),
            ("access_log", ""),
        ])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    db.save_change(&config, "bench-icp", None).await?;
    drop(db);
    let child = Command::new(binary)
        .arg("--db")
        .arg(&db_path)
        .arg("--control")
        .arg(dir.join("canopy.sock"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut running = Running(child);
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), http);
    wait_for_port(addr, &mut running.0, "canopy-proxy").await?;
    Ok((addr, running))
}

async fn start_squid(
    binary: &Path,
    dir: &Path,
    icp_port: u16,
) -> anyhow::Result<(SocketAddr, Running)> {
    let http = free_tcp(IpAddr::V4(SQUID_IP))?;
    let d = dir.display();
    let config = format!(
        "http_port {SQUID_IP}:{http}\nicp_port {icp_port}\n\
         udp_incoming_address {SQUID_IP}\nudp_outgoing_address {SQUID_IP}\n\
         tcp_outgoing_address {SQUID_IP}\n\
         acl loopback src 127.0.0.0/8\nhttp_access allow loopback\nhttp_access deny all\n\
         icp_access allow loopback\nicp_access deny all\ncache_mem 16 MB\n\
         pid_filename {d}/squid.pid\ncache_log {d}/cache.log\naccess_log none\n\
         log_icp_queries off\ncoredump_dir {d}\npinger_enable off\nnetdb_filename none\n\
         shutdown_lifetime 0 seconds\nvisible_hostname squid-bench\nlogfile_rotate 0\n"
    );
    let conf = dir.join("squid.conf");
    std::fs::write(&conf, config)?;
    let child = Command::new(binary)
        .arg("-N")
        .arg("-f")
        .arg(&conf)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut running = Running(child);
    let addr = SocketAddr::new(IpAddr::V4(SQUID_IP), http);
    wait_for_port(addr, &mut running.0, "squid").await?;
    Ok((addr, running))
}
