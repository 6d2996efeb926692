//! Who is asking: the session cookie, the extractors that demand a login, and the CSRF
//! check every form goes through.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;

use crate::accounts::{self, Session, SESSION_SECONDS};
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "canopy_session";
/// Holds the login form's CSRF token until there is a session (double-submit).
pub const LOGIN_COOKIE: &str = "canopy_login";

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value the browser keeps to itself (HttpOnly) and never sends from
/// another site (SameSite=Strict).
pub fn set_cookie(name: &str, value: &str, max_age: i64) -> HeaderValue {
    let text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub fn session_cookie(session: &Session) -> HeaderValue {
    set_cookie(SESSION_COOKIE, &session.id, SESSION_SECONDS)
}

pub fn clear_cookie(name: &str) -> HeaderValue {
    set_cookie(name, "", 0)
}

async fn session_of(parts: &Parts, state: &AppState) -> Result<Option<Session>, Response> {
    let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    accounts::find_session(&state.db, id).await.map_err(|e| {
        tracing::error!("reading the session: {e:#}");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the console cannot read its database",
        )
            .into_response()
    })
}

/// A page handler's proof of login; anyone else is sent to the login page.
impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        session_of(parts, state)
            .await?
            .ok_or_else(|| Redirect::to(&login_url(parts)).into_response())
    }
}

/// The login page, told to come back to the page asked for (a GET; a form posted
/// without a session is not replayed).
fn login_url(parts: &Parts) -> String {
    if parts.method != axum::http::Method::GET {
        return "/login".to_owned();
    }
    match parts.uri.path_and_query().map(|p| p.as_str()) {
        None | Some("/") => "/login".to_owned(),
        Some(path) => format!("/login?next={}", percent_encode(path)),
    }
}

/// `text` with every byte but letters, digits, `-_.~` and `/` percent-encoded, for a path or
/// a query of a URL.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where to go after logging in: a path of this console, never another site.
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(char::is_control) =>
        {
            path
        }
        _ => "/",
    }
}

/// An API handler's proof of login; anyone else gets 401 with a JSON reason.
pub struct ApiSession(pub Session);

impl FromRequestParts<AppState> for ApiSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        session_of(parts, state).await?.map(ApiSession).ok_or_else(|| {
            (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({
                    "ok": false,
                    "error": "log in to the console first (POST /login); the API uses the same session"
                })),
            )
                .into_response()
        })
    }
}

/// The address a request came from; unspecified when the server does not say (a router
/// served without a socket, as in tests).
pub struct ClientAddress(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Ok(ClientAddress(address))
    }
}

/// A posted form, in the order its fields came.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct FormData(pub Vec<(String, String)>);

impl FormData {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A checkbox: present means on.
    pub fn checked(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

/// Whether a form carries its session's CSRF token; refuse it with [`forbidden`] if not.
pub fn csrf_ok(session: &Session, form: &FormData) -> bool {
    form.get("csrf")
        .is_some_and(|token| accounts::same_secret(token, &session.csrf))
}

pub fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "403 Forbidden: this form did not come from this console's session (its CSRF token \
         is missing or out of date). Reload the page and try again.",
    )
        .into_response()
}
