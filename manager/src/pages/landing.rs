//! Post, then redirect, then get: a form that changed something answers 303 to a page, and
//! what it did waits in [`crate::landing`] for that page to show once.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::accounts::Session;
use crate::notice::Notice;
use crate::state::AppState;

/// 303 to page `path`, which then shows `notice`.
pub fn see_other(state: &AppState, session: &Session, path: &str, notice: Notice) -> Response {
    state.landing.put(session, path, notice);
    (StatusCode::SEE_OTHER, [(header::LOCATION, path.to_owned())]).into_response()
}
