//! Logging in and out. The login form is protected by a double-submit token (a cookie and
//! a hidden field that must match) since there is no session yet; the password is checked
//! through the console's [`LoginLimits`](crate::login_limits::LoginLimits) (429 or 503 when
//! it will not be checked now); a failed login is counted and answered only after a delay
//! that grows with the failures in a row.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::Form;

use super::{Answer, OrFailed};
use crate::accounts::{self, Session};
use crate::auth::{self, cookie, csrf_ok, ClientAddress, FormData, LOGIN_COOKIE, SESSION_COOKIE};
use crate::login_limits::Checked;
use crate::state::AppState;

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
) -> Answer {
    let next = auth::safe_next(next.next.as_deref()).to_owned();
    if logged_in(&state, &headers).await {
        return Ok(Redirect::to(&next).into_response());
    }
    let token = accounts::random_token().or_failed("making a login token")?;
    Ok((
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
        .into_response())
}

pub async fn submit(
    State(state): State<AppState>,
    ClientAddress(from): ClientAddress,
    headers: HeaderMap,
    Form(form): Form<FormData>,
) -> Answer {
    let token = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    match form.get("csrf") {
        Some(posted) if !token.is_empty() && accounts::same_secret(posted, token) => {}
        _ => return Err(auth::forbidden().into()),
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
        .await
        .or_failed("checking a password")?;
    match checked {
        Checked::Refused(refusal) => {
            return Err((
                refusal.status(),
                [(header::RETRY_AFTER, refusal.retry_after())],
                page(format!("Not checked: {refusal}.")),
            )
                .into_response()
                .into())
        }
        Checked::Good => {
            let session = accounts::start_session(&state.db, user)
                .await
                .or_failed("starting a session")?;
            let mut response = Redirect::to(next).into_response();
            let headers = response.headers_mut();
            headers.append(header::SET_COOKIE, auth::session_cookie(&session));
            headers.append(header::SET_COOKIE, auth::clear_cookie(LOGIN_COOKIE));
            return Ok(response);
        }
        Checked::Wrong => {}
    }
    let in_a_row = accounts::record_failed_login(&state.db, user)
        .await
        .or_failed("counting a failed login")?;
    let steps = u32::try_from(in_a_row)
        .unwrap_or(MAX_DELAY_STEPS)
        .clamp(1, MAX_DELAY_STEPS);
    tokio::time::sleep(state.login_delay * steps).await;
    tracing::warn!("failed console login for {user:?} ({in_a_row} in a row)");
    Err((
        StatusCode::UNAUTHORIZED,
        page("Wrong user name or password.".to_owned()),
    )
        .into_response()
        .into())
}

pub async fn logout(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<FormData>,
) -> Answer {
    if !csrf_ok(&session, &form) {
        return Err(auth::forbidden().into());
    }
    accounts::end_session(&state.db, &session.id)
        .await
        .or_failed("ending the session")?;
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, auth::clear_cookie(SESSION_COOKIE));
    Ok(response)
}
