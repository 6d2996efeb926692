//! Purge a URL: the form (also on the dashboard) and what the proxy did, as `canopy purge`
//! does it (a PURGE to the proxy's listener). Only an administrator may post it.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Form;
use canopy_config::purge::{PurgeError, Purged};

use super::{Answer, Chrome, Notice};
use crate::accounts::Session;
use crate::auth::{self, csrf_ok, FormData};
use crate::proxy;
use crate::state::AppState;

#[derive(Template, WebTemplate)]
#[template(path = "purge.html")]
pub struct PurgePage {
    chrome: Chrome,
    notice: Option<Notice>,
    /// The URL last posted, kept in the field after a refusal.
    url: String,
}

pub async fn form(session: Session) -> Answer {
    Ok(PurgePage {
        chrome: Chrome::new(&session, "dashboard"),
        notice: None,
        url: String::new(),
    }
    .into_response())
}

pub async fn submit(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<FormData>,
) -> Answer {
    if !csrf_ok(&session, &form) {
        return Err(auth::forbidden().into());
    }
    let url = form.get("url").unwrap_or_default().trim();
    let (status, notice, kept) = match proxy::purge(&state.control, url).await {
        Ok(Purged::Removed) => (
            StatusCode::OK,
            Notice {
                tone: "ok",
                text: format!("Purged: {url} was removed from the cache."),
            },
            "",
        ),
        Ok(Purged::NotCached) => (
            StatusCode::OK,
            Notice {
                tone: "warn",
                text: format!("Not in cache: nothing was stored under {url}."),
            },
            "",
        ),
        Err(e) => {
            let status = match e {
                PurgeError::NotHttp(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            };
            (status, Notice::error(format!("Not purged: {e}.")), url)
        }
    };
    tracing::info!("{} purged {url:?}: {}", session.user, notice.text);
    let page = PurgePage {
        chrome: Chrome::new(&session, "dashboard"),
        notice: Some(notice),
        url: kept.to_owned(),
    };
    Ok((status, page).into_response())
}
