//! Configure → History: every config version, who made it and when, what it changed, what
//! the proxy did with it, and "Restore this version".

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use canopy_config::changes::{readable_diff, version_changes};
use canopy_config::versions::{ConfigVersion, VersionError};

use super::landing::see_other;
use super::{
    in_force, internal_error, not_found, stale_message, when, Answer, Chrome, Editing, Notice,
    OrFailed, Refusal,
};
use crate::accounts::Session;
use crate::apply::{self, ApplyError};
use crate::auth::{FormData, PathForm};
use crate::state::AppState;

/// The History page's address.
const HERE: &str = "/configure/history";

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
        notice,
    })
}

pub async fn list(State(state): State<AppState>, session: Session) -> Answer {
    let notice = state.landing.take(&session, HERE);
    let page = history_page(&state, &session, notice)
        .await
        .or_failed("reading the history")?;
    Ok(page.into_response())
}

/// Version `id`, or the page (404) saying there is none.
async fn version(
    state: &AppState,
    session: &Session,
    id: i64,
    doing: &str,
) -> Result<ConfigVersion, Refusal> {
    match state.db.get(id).await {
        Err(VersionError::NotFound(_)) => Err(not_found(
            session,
            "history",
            format!("There is no config version {id}."),
            (HERE, "See every version in the History"),
        )
        .into()),
        other => other.or_failed(doing),
    }
}

pub async fn show(State(state): State<AppState>, session: Session, Path(id): Path<i64>) -> Answer {
    let version = version(&state, &session, id, "reading a version").await?;
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
        let PathForm {
            session,
            path: id,
            form,
        } = PathForm::<i64>::from_request(request, state).await?;
        let version = version(state, &session, id, "reading the config").await?;
        Ok(VersionButton {
            session,
            form,
            version,
        })
    }
}

/// The history (409) saying why a button of it changed nothing.
async fn refused(state: &AppState, session: &Session, notice: Notice) -> Answer {
    let page = history_page(state, session, Some(notice))
        .await
        .or_failed("reading the history")?;
    Err(Refusal::with(StatusCode::CONFLICT, page))
}

#[derive(Template, WebTemplate)]
#[template(path = "restore.html")]
pub struct RestorePage {
    chrome: Chrome,
    id: i64,
    /// What restoring it changes in the version in force.
    changes: Vec<String>,
    based_on: i64,
    notice: Option<Notice>,
}

impl RestorePage {
    fn new(session: &Session, version: &ConfigVersion, in_force: &ConfigVersion) -> RestorePage {
        RestorePage {
            chrome: Chrome::new(session, "history"),
            id: version.id,
            changes: readable_diff(&version.config, &in_force.config),
            based_on: in_force.id,
            notice: None,
        }
    }
}

/// The confirmation step of "Restore this version": what it would change, and the button
/// that does it.
pub async fn confirm_restore(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> Answer {
    let version = version(&state, &session, id, "reading a version").await?;
    let latest = in_force(&state).await?;
    Ok(RestorePage::new(&session, &version, &latest).into_response())
}

/// Restores version `id` once confirmed; a post without the confirmation step (an old
/// page's button, another site's form) is sent to that step and restores nothing.
pub async fn restore(State(state): State<AppState>, button: VersionButton) -> Answer {
    let VersionButton {
        session,
        form,
        version,
    } = button;
    let id = version.id;
    if form.get("confirm") != Some("yes") {
        let confirm = format!("{HERE}/{id}/restore");
        return Ok((StatusCode::SEE_OTHER, [(header::LOCATION, confirm)]).into_response());
    }
    let latest = in_force(&state).await?;
    let based_on = form
        .get("based_on")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or_default();
    let what = format!("restored version {id}");
    match apply::make_these_changes(
        &state,
        &version.config,
        &session.user,
        based_on,
        Some(&what),
    )
    .await
    {
        Ok(made) => Ok(see_other(&state, &session, HERE, Notice::from(&made))),
        Err(ApplyError::Stale { based_on, .. }) => {
            let mut page = RestorePage::new(&session, &version, &latest);
            page.notice = Some(Notice::error(stale_message(based_on, &latest)));
            Err(Refusal::with(StatusCode::CONFLICT, page))
        }
        Err(e) => Err(internal_error("restoring a version", e).into()),
    }
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
    if discarded {
        let text = format!(
            "Version {id} is discarded: it stays in the history, marked discarded, and is never \
             applied."
        );
        return Ok(see_other(
            &state,
            &session,
            HERE,
            Notice { tone: "ok", text },
        ));
    }
    let text = format!(
        "Nothing was discarded: version {id} is {}, not a rejected version.",
        version.state.as_str()
    );
    refused(&state, &session, Notice::error(text)).await
}
