//! `canopy-manager`: serves the web console of one Canopy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Canopy's web console")]
struct Args {
    /// The SQLite database the proxy uses.
    #[arg(long)]
    db: PathBuf,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let db = canopy_proxy::versions::Db::open(&args.db).await?;
    if let Some(password) = canopy_manager::accounts::ensure_admin(&db).await? {
        println!("Created the console account admin with password: {password}");
    }
    canopy_manager::run(
        db,
        canopy_manager::Options {
            control: args.control,
            listen: args.listen,
            sample_every: Duration::from_secs(args.sample_every.max(1)),
        },
    )
    .await
}
