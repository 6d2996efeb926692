//! `canopy-proxy`: runs the caching proxy on a config database, with a control socket.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use canopy_config::database::DatabaseUrl;
use canopy_config::nodes::{default_node_name, NodeState};
use canopy_config::versions::Db;
use canopy_proxy::control::{self, ControlHandler};
use canopy_proxy::node::{self, Node};
use canopy_proxy::proxy::Proxy;

/// mimalloc: the request path allocates small, short-lived objects on several threads,
/// where it spends about half the instructions of the system allocator. Built without
/// transparent huge pages (see the workspace Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long requests being served may take to finish once the proxy is told to stop
/// (`canopy run` waits a little longer before it kills the proxy).
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(version, about = "Canopy's caching proxy")]
struct Args {
    /// The SQLite config database (created with the defaults when missing); its folder is
    /// the data dir.
    #[arg(long)]
    db: PathBuf,
    /// A config database a fleet of nodes shares (postgres://USER@HOST/DATABASE), in place
    /// of --db's.
    #[arg(long, env = "CANOPY_DATABASE")]
    database: Option<DatabaseUrl>,
    /// This node's name among the nodes of its database (default: the host name).
    #[arg(long, env = "CANOPY_NODE")]
    node: Option<String>,
    /// The control socket (`canopy reload`, `status`, `stats` and the console use it).
    #[arg(long)]
    control: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Taken over first: SIGHUP's default would end the process, and logrotate sends it.
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    canopy_config::init_logging();
    let args = Args::parse();
    let data_dir = args
        .db
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let url = args
        .database
        .clone()
        .unwrap_or_else(|| DatabaseUrl::Sqlite(args.db.clone()));
    canopy_config::files::data_dir(&data_dir)?;
    let node = Node::new(args.node.clone().unwrap_or_else(default_node_name));
    let control_listener = control::bind(&args.control)
        .with_context(|| format!("control socket {}", args.control.display()))?;
    let proxy = match Db::connect(&url).await {
        Ok(db) => Proxy::start(db, data_dir, node).await?,
        // A fleet's node serves on without PostgreSQL, on the version it last applied.
        Err(error) if url.is_shared() => {
            let Some(last) = node::last_applied(&data_dir)? else {
                anyhow::bail!(
                    "opening {url}: {error}; no config version was ever applied on this node \
                     to start on without it"
                );
            };
            Proxy::start_offline(Db::connect_lazy(&url)?, data_dir, node, last, &error).await?
        }
        Err(error) => return Err(error).with_context(|| format!("opening {url}")),
    };
    if url.is_shared() {
        tokio::spawn(proxy.clone().follow_fleet());
    }
    tokio::spawn(control::serve(control_listener, proxy.clone()));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => {
                if let Err(e) = proxy.reopen_logs().await {
                    tracing::error!("SIGHUP: {e}");
                }
            }
        }
    }
    tracing::info!("stopping: no new connections; waiting for requests being served");
    let left = proxy.drain(DRAIN_LIMIT).await;
    if left > 0 {
        tracing::warn!("{left} client connections cut after {DRAIN_LIMIT:?}");
    }
    proxy.report(NodeState::Stopped).await;
    let _ = std::fs::remove_file(&args.control);
    Ok(())
}
