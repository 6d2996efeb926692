//! `/api/...`: what the pages show, as JSON, behind the same login.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::accounts::unix_now;
use crate::auth::ApiSession;
use crate::pages::monitor::{live, peer_rows, Live};
use crate::pages::{Answer, Refusal};
use crate::samples;
use crate::state::AppState;

fn failed(status: StatusCode, error: impl ToString) -> Response {
    (
        status,
        Json(json!({ "ok": false, "error": error.to_string() })),
    )
        .into_response()
}

/// The console's own failure (its database) as JSON, for `?`.
fn failed_500<T>(result: Result<T, impl ToString>) -> Result<T, Refusal> {
    result.map_err(|e| failed(StatusCode::INTERNAL_SERVER_ERROR, e).into())
}

/// `{"running": true, "status": {...}}`, or `running: false` with the reason.
pub async fn status(State(state): State<AppState>, _: ApiSession) -> Answer {
    let newest = failed_500(state.db.latest().await)?;
    let body = match proxy_status(&state).await {
        Ok(status) => {
            json!({ "ok": true, "running": true, "status": status, "newest_version": newest.id })
        }
        Err(e) => json!({ "ok": true, "running": false, "reason": e, "newest_version": newest.id }),
    };
    Ok(Json(body).into_response())
}

async fn proxy_status(state: &AppState) -> Result<canopy_config::control::StatusReply, String> {
    crate::proxy::status(&state.control)
        .await
        .map_err(|e| e.to_string())
}

/// The proxy's counters as `stats` returns them; 503 when it does not answer.
pub async fn stats(State(state): State<AppState>, _: ApiSession) -> Response {
    match crate::proxy::stats(&state.control).await {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => failed(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// The rows of Monitor → Peers.
pub async fn peers(State(state): State<AppState>, _: ApiSession) -> Answer {
    let newest = failed_500(state.db.latest().await)?;
    let Live { status, stats } = live(&state).await;
    Ok(Json(json!({
        "running": status.is_ok(),
        "peers": peer_rows(&newest.config, stats.as_ref()),
    }))
    .into_response())
}

#[derive(Deserialize)]
pub struct Since {
    /// How far back, in minutes (default 60, at most a year).
    minutes: Option<i64>,
    /// One node's samples; every node's without it.
    node: Option<String>,
}

/// One peer's samples: `{"columns": [...], "samples": [{"at": unix, "values": [...]}]}`;
/// with several nodes, each node's series one after the other (`?node=NAME`: one node's).
pub async fn peer_history(
    State(state): State<AppState>,
    _: ApiSession,
    Path(name): Path<String>,
    Query(since): Query<Since>,
) -> Answer {
    let minutes = since.minutes.unwrap_or(60).clamp(1, 366 * 24 * 60);
    let scope = samples::Scope::from_query(since.node.as_deref());
    let series = samples::peer(&state.db, &scope, &name, unix_now() - minutes * 60).await;
    let samples = failed_500(series)?.concat();
    Ok(Json(json!({
        "peer": name,
        "columns": samples::PEER_COLUMNS,
        "samples": samples,
    }))
    .into_response())
}

/// Config versions, newest first (without their full content; see `/api/config`).
pub async fn history(State(state): State<AppState>, _: ApiSession) -> Answer {
    let versions = failed_500(state.db.list(200).await)?;
    let rows = versions
        .iter()
        .map(|v| {
            json!({
                "id": v.id,
                "created_at": v.created_at,
                "author": v.author,
                "summary": v.summary,
                "state": v.state,
                "state_reason": v.state_reason,
            })
        })
        .collect::<Vec<_>>();
    Ok(Json(rows).into_response())
}

/// The newest config version, whole.
pub async fn config(State(state): State<AppState>, _: ApiSession) -> Answer {
    Ok(Json(failed_500(state.db.latest().await)?).into_response())
}
