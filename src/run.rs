//! `canopy run`: starts the proxy, then the console, prints where to point a browser and a
//! client, and supervises both until Ctrl-C or SIGTERM.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::Signal;
use tokio::process::{Child, Command as Process};
use tokio::signal::unix::{signal, SignalKind};

use canopy_config::control::{self, Command, StatusReply};

use crate::commands::Paths;
use crate::supervisor::{self, describe_exit, Supervised};

/// The binaries `run` starts: beside this one (as cargo builds them), or on the PATH.
pub(crate) fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

pub(crate) fn spawn(name: &str, paths: &Paths) -> anyhow::Result<Child> {
    let mut process = Process::new(sibling_binary(name));
    // Safety: prctl is async-signal-safe, and nothing else runs in the child before exec.
    // A child is told to stop (SIGTERM) if `canopy run` dies, even by SIGKILL, so that no
    // proxy is left holding the port without a supervisor. (The signal follows the thread
    // that started the child: a runtime worker, which lives as long as `canopy run`.)
    unsafe {
        process.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    if let Some(database) = &paths.database {
        process.arg("--database").arg(database.as_arg());
    }
    if let Some(node) = &paths.node {
        process.arg("--node").arg(node);
    }
    process
        .arg("--db")
        .arg(&paths.db)
        .arg("--control")
        .arg(&paths.control)
        // A group of its own: Ctrl-C and a terminal's hangup reach `canopy run` alone, which
        // stops or signals each child itself.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name} (build it with `cargo build --release`)"))
}

pub(crate) async fn run(paths: &Paths) -> anyhow::Result<ExitCode> {
    // Taken over before any child starts: a SIGTERM that came while starting would
    // otherwise end this process and leave the children running.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    match paths.open_db().await {
        Ok(db) => {
            if let Some(password) = canopy_manager::accounts::ensure_admin(&db).await? {
                // Printed at once, so it is not lost if the proxy then fails to start.
                println!("Console account created: admin, password {password} (shown only now;");
                println!("  change it with `canopy admin set-password admin`).");
            }
        }
        // A fleet node whose PostgreSQL is down starts on the version it last applied; its
        // console says the database is unreachable until it is back.
        Err(e) if paths.database.is_some() => {
            println!("The database does not answer ({e:#}).");
            println!(
                "  Starting on the version last applied here; the node catches up when it is back."
            );
        }
        Err(e) => return Err(e),
    }
    let mut proxy = spawn("canopy-proxy", paths)?;
    let status = match wait_until_up(paths, &mut proxy).await {
        Ok(status) => status,
        Err(e) => {
            let _ = proxy.start_kill();
            return Err(e);
        }
    };
    let manager = spawn("canopy-manager", paths)?;
    let listen = status.http_listen.replace("0.0.0.0", "127.0.0.1");
    println!(
        "Canopy {} is running (config version {}).",
        env!("CARGO_PKG_VERSION"),
        status.config_version
    );
    if let Some(rejected) = &status.rejected_version {
        println!(
            "  Note: config version {} was rejected; see `canopy status`.",
            rejected.id
        );
    }
    println!("  Proxy:   {listen}   try: curl -x http://{listen} http://example.com/");
    println!("  Console: http://{}/", status.manager_listen);
    println!("  Data:    {}", paths.data_dir.display());
    println!("Press Ctrl-C to stop.");
    let mut proxy = Supervised::new("canopy-proxy", proxy);
    let mut manager = Supervised::new("canopy-manager", manager);
    supervisor::record(&paths.data_dir, &[&proxy, &manager]);
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => proxy.signal(Signal::SIGHUP),
            event = proxy.next() => proxy.handle(event, || spawn("canopy-proxy", paths)),
            event = manager.next() => manager.handle(event, || spawn("canopy-manager", paths)),
        }
        supervisor::record(&paths.data_dir, &[&proxy, &manager]);
    }
    tokio::join!(proxy.stop(STOP_GRACE), manager.stop(STOP_GRACE));
    supervisor::forget(&paths.data_dir);
    // Whoever started us may have closed our stdout by now; that is no failure.
    let _ = writeln!(std::io::stdout(), "Canopy stopped.");
    Ok(ExitCode::SUCCESS)
}

/// How long a child has to stop after SIGTERM before it is killed: longer than the proxy
/// lets the requests it is serving take to finish (10 s).
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(15);

/// Waits for the proxy's control socket to answer, or for the proxy to die trying.
pub(crate) async fn wait_until_up(paths: &Paths, proxy: &mut Child) -> anyhow::Result<StatusReply> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(exited) = proxy.try_wait()? {
            anyhow::bail!("canopy-proxy {} while starting", describe_exit(exited));
        }
        match control::call_typed::<StatusReply>(&paths.control, Command::Status).await {
            Ok(status) => return Ok(status),
            Err(e) if Instant::now() > deadline => {
                anyhow::bail!("canopy-proxy did not answer on its control socket: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
