//! Configure → History: every config version, who made it and when, what it changed, what
//! the proxy did with it, and "Restore this version".

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Form;
use canopy_config::changes::{readable_diff, version_changes};
use canopy_config::versions::{ConfigVersion, VersionError};

use super::{
    in_force, internal_error, stale_message, when, Answer, Chrome, Editing, Notice, OrFailed,
    Refusal,
};
use crate::accounts::Session;
use crate::apply::{self, ApplyError};
use crate::auth::{self, csrf_ok, FormData};
use crate::state::AppState;

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
    /// Whether this is the rejected version after the one in force, which the forms can
    /// open to fix, or which can be discarded.
    waiting: bool,
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

pub async fn list(State(state): State<AppState>, session: Session) -> Answer {
    let page = history_page(&state, &session, None)
        .await
        .or_failed("reading the history")?;
    Ok(page.into_response())
}

/// Version `id`, or the page saying there is none.
async fn version(state: &AppState, id: i64, doing: &str) -> Result<ConfigVersion, Refusal> {
    match state.db.get(id).await {
        Err(VersionError::NotFound(_)) => Err((
            StatusCode::NOT_FOUND,
            format!("There is no config version {id}."),
        )
            .into_response()
            .into()),
        other => other.or_failed(doing),
    }
}

pub async fn show(State(state): State<AppState>, session: Session, Path(id): Path<i64>) -> Answer {
    let version = version(&state, id, "reading a version").await?;
    let editing = Editing::load(&state, Some(id)).await?;
    let latest = &editing.in_force;
    let before = match id {
        1 => None,
        _ => state.db.get(id - 1).await.ok(),
    };
    Ok(VersionPage {
        chrome: Chrome::new(&session, "history"),
        restoring_changes: readable_diff(&version.config, &latest.config),
        toml: version.config.to_toml(),
        version: VersionRow::new(&version, before.as_ref(), version.id == latest.id),
        based_on: latest.id,
        waiting: editing.opened,
    }
    .into_response())
}

/// A button of the history (restore, discard): the version it is about, when its form
/// carries the session's CSRF token.
pub struct VersionButton {
    session: Session,
    form: FormData,
    version: ConfigVersion,
}

impl FromRequest<AppState> for VersionButton {
    type Rejection = Refusal;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Refusal> {
        let (mut parts, body) = request.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let Path(id) = Path::<i64>::from_request_parts(&mut parts, state)
            .await
            .map_err(|e| Refusal::from(e.into_response()))?;
        let Form(form) = Form::<FormData>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|e| Refusal::from(e.into_response()))?;
        if !csrf_ok(&session, &form) {
            return Err(auth::forbidden().into());
        }
        let version = version(state, id, "reading the config").await?;
        Ok(VersionButton {
            session,
            form,
            version,
        })
    }
}

/// The history, with what a button on it did.
async fn history_after(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    notice: Notice,
) -> Answer {
    let page = history_page(state, session, Some(notice))
        .await
        .or_failed("reading the history")?;
    Ok((status, page).into_response())
}

pub async fn restore(State(state): State<AppState>, button: VersionButton) -> Answer {
    let VersionButton {
        session,
        form,
        version,
    } = button;
    let id = version.id;
    let latest = in_force(&state).await?;
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
        Ok(made) => (StatusCode::OK, Notice::from(&made)),
        Err(ApplyError::Stale { based_on, .. }) => (
            StatusCode::CONFLICT,
            Notice::error(stale_message(based_on, &latest)),
        ),
        Err(e) => return Err(internal_error("restoring a version", e).into()),
    };
    history_after(&state, &session, status, notice).await
}

/// Sets a rejected version aside: it stays in the history, marked discarded, and is no
/// longer shown beside the version in force nor ever applied.
pub async fn discard(State(state): State<AppState>, button: VersionButton) -> Answer {
    let VersionButton {
        session, version, ..
    } = button;
    let id = version.id;
    let discarded = state
        .db
        .discard(id)
        .await
        .or_failed("discarding a version")?;
    let (status, notice) = if discarded {
        let text = format!(
            "Version {id} is discarded: it stays in the history, marked discarded, and is never \
             applied."
        );
        (StatusCode::OK, Notice { tone: "ok", text })
    } else {
        let text = format!(
            "Nothing was discarded: version {id} is {}, not a rejected version.",
            version.state.as_str()
        );
        (StatusCode::CONFLICT, Notice::error(text))
    };
    history_after(&state, &session, status, notice).await
}
