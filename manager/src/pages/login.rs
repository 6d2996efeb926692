//! Logging in and out. The login form is protected by a double-submit token (a cookie and
//! a hidden field that must match) since there is no session yet; the password is checked
//! through the console's [`LoginLimits`](crate::login_limits::LoginLimits) (429 or 503 when
//! it will not be checked now); a failed login is counted and answered only after a delay
//! that grows with the failures in a row.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

use super::internal_error;
use crate::accounts::{self, Session};
use crate::auth::{self, cookie, csrf_ok, ClientAddress, FormData, LOGIN_COOKIE, SESSION_COOKIE};
use crate::login_limits::Checked;
use crate::AppState;

/// The most a failed login is slowed down, in multiples of the configured delay.
const MAX_DELAY_STEPS: u32 = 5;

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
pub struct LoginPage {
    csrf: String,
    user: String,
    error: Option<String>,
    /// The console page to go to once logged in.
    next: String,
}

#[derive(serde::Deserialize)]
pub struct Next {
    next: Option<String>,
}

async fn logged_in(state: &AppState, headers: &HeaderMap) -> bool {
    match cookie(headers, SESSION_COOKIE) {
        Some(id) => matches!(accounts::find_session(&state.db, id).await, Ok(Some(_))),
        None => false,
    }
}

pub async fn form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(next): Query<Next>,
) -> Response {
    let next = auth::safe_next(next.next.as_deref()).to_owned();
    if logged_in(&state, &headers).await {
        return Redirect::to(&next).into_response();
    }
    let token = match accounts::random_token() {
        Ok(token) => token,
        Err(e) => return internal_error("making a login token", e),
    };
    (
        [(
            header::SET_COOKIE,
            auth::set_cookie(LOGIN_COOKIE, &token, 3600),
        )],
        LoginPage {
            csrf: token,
            user: String::new(),
            error: None,
            next,
        },
    )
        .into_response()
}

pub async fn submit(
    State(state): State<AppState>,
    ClientAddress(from): ClientAddress,
    headers: HeaderMap,
    Form(form): Form<FormData>,
) -> Response {
    let token = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    match form.get("csrf") {
        Some(posted) if !token.is_empty() && accounts::same_secret(posted, token) => {}
        _ => return auth::forbidden(),
    }
    let user = form.get("user").unwrap_or_default().trim();
    let next = auth::safe_next(form.get("next"));
    let password = form.get("password").unwrap_or_default();
    let page = |error: String| LoginPage {
        csrf: token.to_owned(),
        user: user.to_owned(),
        error: Some(error),
        next: next.to_owned(),
    };
    let checked = state
        .login_limits
        .check_login(&state.db, from, user, password)
        .await;
    match checked {
        Err(e) => return internal_error("checking a password", e),
        Ok(Checked::Refused(refusal)) => {
            return (
                refusal.status(),
                [(header::RETRY_AFTER, refusal.retry_after())],
                page(format!("Not checked: {refusal}.")),
            )
                .into_response()
        }
        Ok(Checked::Good) => {
            return match accounts::start_session(&state.db, user).await {
                Ok(session) => {
                    let mut response = Redirect::to(next).into_response();
                    let headers = response.headers_mut();
                    headers.append(header::SET_COOKIE, auth::session_cookie(&session));
                    headers.append(header::SET_COOKIE, auth::clear_cookie(LOGIN_COOKIE));
                    response
                }
                Err(e) => internal_error("starting a session", e),
            }
        }
        Ok(Checked::Wrong) => {}
    }
    let in_a_row = match accounts::record_failed_login(&state.db, user).await {
        Ok(n) => n,
        Err(e) => return internal_error("counting a failed login", e),
    };
    let steps = u32::try_from(in_a_row)
        .unwrap_or(MAX_DELAY_STEPS)
        .clamp(1, MAX_DELAY_STEPS);
    tokio::time::sleep(state.login_delay * steps).await;
    tracing::warn!("failed console login for {user:?} ({in_a_row} in a row)");
    (
        StatusCode::UNAUTHORIZED,
        page("Wrong user name or password.".to_owned()),
    )
        .into_response()
}

pub async fn logout(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<FormData>,
) -> Response {
    if !csrf_ok(&session, &form) {
        return auth::forbidden();
    }
    if let Err(e) = accounts::end_session(&state.db, &session.id).await {
        return internal_error("ending the session", e);
    }
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, auth::clear_cookie(SESSION_COOKIE));
    response
}
