//! `canopy-manager`: serves the web console of one Canopy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use canopy_config::config::Config;
use canopy_config::database::DatabaseUrl;
use canopy_config::nodes::{default_node_name, LAST_APPLIED_FILE};
use canopy_config::versions::{ConfigVersion, Db};

#[derive(Parser)]
#[command(version, about = "Canopy's web console")]
struct Args {
    /// The SQLite config database shared with the proxy.
    #[arg(long)]
    db: PathBuf,
    /// A config database a fleet of nodes shares (postgres://USER@HOST/DATABASE), in place
    /// of --db's.
    #[arg(long, env = "CANOPY_DATABASE")]
    database: Option<DatabaseUrl>,
    /// The proxy's control socket.
    #[arg(long)]
    control: PathBuf,
    /// The name of this console's node among the nodes of its database, as the proxy's
    /// `--node` (default: the host name); its samples are kept under it.
    #[arg(long)]
    node: Option<String>,
    /// Listen here instead of the config's manager_listen.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Seconds between two samples of the proxy's counters.
    #[arg(long, default_value_t = 5)]
    sample_every: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    canopy_config::init_logging();
    let args = Args::parse();
    let mut terminate = signal(SignalKind::terminate())?;
    // Taken over first: SIGHUP's default would end the console; logrotate and `pkill -HUP canopy` send it.
    let mut hangup = signal(SignalKind::hangup())?;
    let url = args
        .database
        .clone()
        .unwrap_or_else(|| DatabaseUrl::Sqlite(args.db.clone()));
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = terminate.recv() => break,
                _ = hangup.recv() => tracing::info!(
                    "SIGHUP: the console writes no log file of its own; nothing to reopen"
                ),
            }
        }
        stop.send_replace(true);
    });
    let db = match Db::connect(&url).await {
        Ok(db) => db,
        Err(error) => {
            let listen = args.listen.unwrap_or_else(|| last_listen(&args.db));
            let reached = canopy_manager::unreachable::serve_until_reachable(
                &url,
                listen,
                &error,
                stopping.clone(),
            )
            .await?;
            match reached {
                Some(db) => db,
                None => return Ok(()),
            }
        }
    };
    if let Some(password) = canopy_manager::accounts::ensure_admin(&db).await? {
        println!("Created the console account admin with password: {password}");
    }
    let mut stopping = stopping;
    let shutdown = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let options = canopy_manager::Options {
        control: args.control,
        listen: args.listen,
        node: args.node.unwrap_or_else(default_node_name),
        sample_every: Duration::from_secs(args.sample_every.max(1)),
    };
    canopy_manager::run(db, options, shutdown).await
}

/// Where the console listened when the database last answered: the `manager_listen` of the
/// version the proxy beside it last applied (kept in the data dir), else the default.
fn last_listen(db: &std::path::Path) -> std::net::SocketAddr {
    let file = db
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(LAST_APPLIED_FILE);
    std::fs::read(file)
        .ok()
        .and_then(|text| serde_json::from_slice::<ConfigVersion>(&text).ok())
        .map_or_else(
            || Config::default().manager_listen,
            |version| version.config.manager_listen,
        )
}
