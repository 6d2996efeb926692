//! Configure → History: every config version, who made it and when, what it changed, what
//! the proxy did with it, and "Restore this version".

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Form;
use canopy_config::changes::{readable_diff, version_changes};
use canopy_config::versions::{ConfigVersion, VersionError};

use super::routing::stale_message;
use super::{internal_error, when, Chrome, Notice};
use crate::accounts::Session;
use crate::apply::{self, ApplyError};
use crate::auth::{self, csrf_ok, FormData};
use crate::AppState;

/// How many versions the list shows.
const LIST_LIMIT: i64 = 200;

/// One version as the list shows it.
pub struct VersionRow {
    pub id: i64,
    pub when: String,
    pub author: String,
    pub changes: Vec<String>,
    pub state: &'static str,
    pub reason: String,
    pub newest: bool,
}

impl VersionRow {
    /// `before`: the version saved just before this one, when at hand, so the changes
    /// can be told field by field.
    fn new(v: &ConfigVersion, before: Option<&ConfigVersion>, newest: bool) -> VersionRow {
        let changes = version_changes(v, before);
        VersionRow {
            id: v.id,
            when: when(&v.created_at),
            author: v.author.clone(),
            changes,
            state: v.state.as_str(),
            reason: v.state_reason.clone().unwrap_or_default(),
            newest,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "history.html")]
pub struct HistoryPage {
    chrome: Chrome,
    versions: Vec<VersionRow>,
    based_on: i64,
    notice: Option<Notice>,
}

#[derive(Template, WebTemplate)]
#[template(path = "version.html")]
pub struct VersionPage {
    chrome: Chrome,
    /// With what it changed from the version before it.
    version: VersionRow,
    /// What restoring it would change in the newest version.
    restoring_changes: Vec<String>,
    toml: String,
    based_on: i64,
}

async fn history_page(
    state: &AppState,
    session: &Session,
    notice: Option<Notice>,
) -> Result<HistoryPage, VersionError> {
    let versions = state.db.list(LIST_LIMIT).await?;
    let newest = versions.first().map(|v| v.id).unwrap_or_default();
    Ok(HistoryPage {
        chrome: Chrome::new(session, "history"),
        versions: versions
            .iter()
            .enumerate()
            .map(|(i, v)| VersionRow::new(v, versions.get(i + 1), v.id == newest))
            .collect(),
        based_on: newest,
        notice,
    })
}

pub async fn list(State(state): State<AppState>, session: Session) -> Response {
    match history_page(&state, &session, None).await {
        Ok(page) => page.into_response(),
        Err(e) => internal_error("reading the history", e),
    }
}

pub async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> Response {
    let version = match state.db.get(id).await {
        Ok(v) => v,
        Err(VersionError::NotFound(_)) => {
            return (
                StatusCode::NOT_FOUND,
                format!("There is no config version {id}."),
            )
                .into_response()
        }
        Err(e) => return internal_error("reading a version", e),
    };
    let latest = match state.db.in_force().await {
        Ok(v) => v,
        Err(e) => return internal_error("reading the config", e),
    };
    let before = match id {
        1 => None,
        _ => state.db.get(id - 1).await.ok(),
    };
    VersionPage {
        chrome: Chrome::new(&session, "history"),
        restoring_changes: readable_diff(&version.config, &latest.config),
        toml: version.config.to_toml(),
        version: VersionRow::new(&version, before.as_ref(), version.id == latest.id),
        based_on: latest.id,
    }
    .into_response()
}

pub async fn restore(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<FormData>,
) -> Response {
    if !csrf_ok(&session, &form) {
        return auth::forbidden();
    }
    let (version, latest) = match (state.db.get(id).await, state.db.in_force().await) {
        (Ok(v), Ok(latest)) => (v, latest),
        (Err(VersionError::NotFound(_)), _) => {
            return (
                StatusCode::NOT_FOUND,
                format!("There is no config version {id}."),
            )
                .into_response()
        }
        (Err(e), _) | (_, Err(e)) => return internal_error("reading the config", e),
    };
    let based_on = form
        .get("based_on")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or_default();
    let what = format!("restored version {id}");
    let (status, notice) = match apply::make_these_changes(
        &state,
        &version.config,
        &session.user,
        based_on,
        Some(&what),
    )
    .await
    {
        Ok(outcome) => (StatusCode::OK, Notice::from(&outcome)),
        Err(ApplyError::Stale { based_on, .. }) => (
            StatusCode::CONFLICT,
            Notice::error(stale_message(based_on, &latest)),
        ),
        Err(e) => return internal_error("restoring a version", e),
    };
    match history_page(&state, &session, Some(notice)).await {
        Ok(page) => (status, page).into_response(),
        Err(e) => internal_error("reading the history", e),
    }
}
