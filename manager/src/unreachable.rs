//! The console while its database does not answer at start (a fleet's PostgreSQL down):
//! every address answers 503 with a page that says which database (its URL without the
//! password) is unreachable, since when and why, while the connection is tried again in the
//! background. Once it answers, this server stops and the console starts as usual on the
//! same address, without a restart.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use askama::Template;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use canopy_config::database::DatabaseUrl;
use canopy_config::versions::{now_rfc3339, Db};

use crate::pages::when;

/// How often the database is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(2);

#[derive(Template)]
#[template(path = "unreachable.html")]
struct UnreachablePage {
    url: String,
    since: String,
    error: String,
    retry_s: u64,
    refresh_s: u64,
}

/// What the page says: the database, since when, and the last error.
#[derive(Debug)]
struct Unreachable {
    url: String,
    since: String,
    error: Mutex<String>,
}

async fn answer(State(unreachable): State<Arc<Unreachable>>) -> Response {
    let page = UnreachablePage {
        url: unreachable.url.clone(),
        since: unreachable.since.clone(),
        error: unreachable
            .error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default(),
        retry_s: RETRY_EVERY.as_secs(),
        refresh_s: 5,
    };
    let retry = RETRY_EVERY.as_secs().to_string();
    match page.render() {
        Ok(html) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, retry)],
            Html(html),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Serves the page on `listen` and tries `url` every [`RETRY_EVERY`] until it answers (its
/// schema brought up to date), then stops serving and gives the database; `None` when
/// `stop` turned true first.
pub async fn serve_until_reachable(
    url: &DatabaseUrl,
    listen: SocketAddr,
    first: &dyn std::fmt::Display,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<Db>> {
    tracing::error!(
        "the database at {url} is unreachable: {first}; the console says so on \
         http://{listen}/ and tries again every {} s",
        RETRY_EVERY.as_secs()
    );
    let unreachable = Arc::new(Unreachable {
        url: url.to_string(),
        since: when(&now_rfc3339()),
        error: Mutex::new(first.to_string()),
    });
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen} for the console"))?;
    let app = Router::new()
        .fallback(answer)
        .layer(axum::middleware::map_response(crate::security_headers))
        .with_state(unreachable.clone());
    let (quit, mut quitting) = watch::channel(());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { while quitting.changed().await.is_ok() {} })
            .await
    });
    let reached = loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break None,
            _ = tokio::time::sleep(RETRY_EVERY) => {}
        }
        match Db::connect(url).await {
            Ok(db) => break Some(db),
            Err(e) => {
                if let Ok(mut error) = unreachable.error.lock() {
                    *error = e.to_string();
                }
            }
        }
    };
    drop(quit);
    server.await??;
    if reached.is_some() {
        tracing::info!(
            "the database at {url} answers again (unreachable since {}); the console opens",
            unreachable.since
        );
    }
    Ok(reached)
}
