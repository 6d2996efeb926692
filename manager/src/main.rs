//! `canopy-manager`: the web console.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use canopy_proxy::versions::Db;

#[derive(Parser)]
#[command(version, about = "Canopy's web console")]
struct Args {
    /// The SQLite config database shared with the proxy.
    #[arg(long)]
    db: PathBuf,
    /// The proxy's control socket.
    #[arg(long)]
    control: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let db = Db::open(&args.db)
        .await
        .with_context(|| format!("opening {}", args.db.display()))?;
    let listen = db.latest().await?.config.manager_listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("console cannot listen on {listen}"))?;
    tracing::info!("console listening on http://{listen}/");
    let mut terminate = signal(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    axum::serve(listener, canopy_manager::router())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
