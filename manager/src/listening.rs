//! Where the console listens, and moving it when the version in force changes
//! `manager_listen` (or its node's own `manager_listen` does): the new address is bound and
//! served before the old one stops, so an address that cannot be bound leaves the console
//! where it was.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use canopy_config::versions::{Db, VersionError};

/// How often the version in force is read for a new `manager_listen`.
const CHECK_EVERY: Duration = Duration::from_secs(1);

type App = IntoMakeServiceWithConnectInfo<Router, SocketAddr>;

/// The `manager_listen` of the version in force as `node` runs it (its own settings laid
/// over).
pub async fn wanted(db: &Db, node: &str) -> Result<SocketAddr, VersionError> {
    let in_force = db.in_force().await?;
    Ok(db.for_node(node, in_force).await?.config.manager_listen)
}

/// Serves `app` on `listen` until `shutdown` completes. With `follow`, moves to the
/// `manager_listen` of each new version in force, as `node` runs it.
pub async fn serve(
    db: Db,
    node: String,
    app: App,
    listen: SocketAddr,
    follow: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen} for the console"))?;
    tracing::info!("console on http://{listen}/");
    let mut servers = JoinSet::new();
    let mut current = (listen, start(&mut servers, listener, app.clone()));
    let mut refused: Option<SocketAddr> = None;
    let mut check = tokio::time::interval(CHECK_EVERY);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = check.tick(), if follow => {}
        }
        let wanted = match wanted(&db, &node).await {
            Ok(wanted) => wanted,
            Err(e) => {
                tracing::warn!("reading manager_listen: {e}");
                continue;
            }
        };
        if wanted == current.0 || refused == Some(wanted) {
            continue;
        }
        match TcpListener::bind(wanted).await {
            Ok(listener) => {
                let stop = start(&mut servers, listener, app.clone());
                let (old, _) = std::mem::replace(&mut current, (wanted, stop));
                // Dropping the old sender lets its requests finish, then closes it.
                tracing::info!("console moved from http://{old}/ to http://{wanted}/");
                refused = None;
            }
            Err(e) => {
                tracing::error!(
                    "the console cannot listen on {wanted} (manager_listen): {e}; it stays on {}",
                    current.0
                );
                refused = Some(wanted);
            }
        }
    }
    drop(current);
    while let Some(done) = servers.join_next().await {
        done??;
    }
    Ok(())
}

/// Serves one listener until the returned sender is dropped.
fn start(
    servers: &mut JoinSet<std::io::Result<()>>,
    listener: TcpListener,
    app: App,
) -> watch::Sender<()> {
    let (stop, mut stopped) = watch::channel(());
    servers.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { while stopped.changed().await.is_ok() {} })
            .await
    });
    stop
}
