//! `canopy-manager`: serves the web console of one Canopy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use canopy_config::database::DatabaseUrl;
use canopy_config::versions::Db;

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
    let db = Db::connect(&url)
        .await
        .with_context(|| format!("opening {url}"))?;
    if let Some(password) = canopy_manager::accounts::ensure_admin(&db).await? {
        println!("Created the console account admin with password: {password}");
    }
    let shutdown = async move {
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = terminate.recv() => return,
                _ = hangup.recv() => tracing::info!(
                    "SIGHUP: the console writes no log file of its own; nothing to reopen"
                ),
            }
        }
    };
    let options = canopy_manager::Options {
        control: args.control,
        listen: args.listen,
        sample_every: Duration::from_secs(args.sample_every.max(1)),
    };
    canopy_manager::run(db, options, shutdown).await
}
