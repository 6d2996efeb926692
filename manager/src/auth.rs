//! Who is asking: the session cookie, the extractors that demand a login, and the CSRF
//! check every form goes through.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};

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

/// Before any handler: a monitor's request that could change something (any method but GET
/// and HEAD, apart from logging in and out) is refused with 403. Guarding every route here
/// rather than in each handler means a new form cannot forget it.
pub async fn changes_need_an_administrator(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let reads = request.method().is_safe();
    let logs_in_or_out = matches!(request.uri().path(), "/login" | "/logout");
    if reads || logs_in_or_out {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    match session_of(&parts, &state).await {
        Err(failed) => failed,
        Ok(Some(session)) if !session.role.may_change() => read_only(&session),
        Ok(_) => next.run(Request::from_parts(parts, body)).await,
    }
}

/// The answer to a monitor's attempt to change something.
pub fn read_only(session: &Session) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "403 Forbidden: the account {:?} is {}, which is read-only: it sees every page \
             but changes nothing. An administrator can change its role on the Accounts page \
             or with `canopy admin role`.",
            session.user,
            session.role.with_article()
        ),
    )
        .into_response()
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

/// A form posted about one thing its path names (an account, a version): the session, the
/// path's value and the form, when the form carries the session's CSRF token (403 otherwise).
pub struct PathForm<T> {
    pub session: Session,
    pub path: T,
    pub form: FormData,
}

impl<T: serde::de::DeserializeOwned + Send> FromRequest<AppState> for PathForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let Path(path) = Path::<T>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Form(form) = Form::<FormData>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        if !csrf_ok(&session, &form) {
            return Err(forbidden());
        }
        Ok(PathForm {
            session,
            path,
            form,
        })
    }
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::accounts::Role;

    async fn state() -> (tempfile::TempDir, AppState) {
        let dir = tempfile::tempdir().unwrap();
        let db = canopy_config::versions::Db::open(&dir.path().join("canopy.db"))
            .await
            .unwrap();
        accounts::set_password(&db, "admin", "a password")
            .await
            .unwrap();
        accounts::add(&db, "watcher", Role::Monitor, "a password")
            .await
            .unwrap();
        let control = dir.path().join("canopy.sock");
        (dir, AppState::new(db, control))
    }

    async fn send(state: &AppState, method: &str, path: &str, session: &Session) -> Response {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1")
            .header(header::COOKIE, format!("{SESSION_COOKIE}={}", session.id))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf={}&role=admin", session.csrf)))
            .unwrap();
        crate::router(state.clone()).oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn a_monitor_reads_and_logs_out_but_changes_nothing() {
        let (_dir, state) = state().await;
        let monitor = accounts::start_session(&state.db, "watcher").await.unwrap();
        for path in ["/configure/routing", "/configure/accounts/watcher/role"] {
            let refused = send(&state, "POST", path, &monitor).await;
            assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{path}");
        }
        assert_eq!(
            send(&state, "DELETE", "/configure/accounts", &monitor)
                .await
                .status(),
            StatusCode::FORBIDDEN
        );
        let still = accounts::find(&state.db, "watcher").await.unwrap().unwrap();
        assert_eq!(still.role, Role::Monitor);
        assert_eq!(
            send(&state, "GET", "/configure/accounts", &monitor)
                .await
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            send(&state, "POST", "/logout", &monitor).await.status(),
            StatusCode::SEE_OTHER
        );
    }

    #[tokio::test]
    async fn an_administrator_passes_until_demoted() {
        let (_dir, state) = state().await;
        accounts::add(&state.db, "second", Role::Administrator, "a password")
            .await
            .unwrap();
        let second = accounts::start_session(&state.db, "second").await.unwrap();
        let promoted = send(&state, "POST", "/configure/accounts/watcher/role", &second).await;
        assert_eq!(promoted.status(), StatusCode::OK);
        let watcher = accounts::find(&state.db, "watcher").await.unwrap().unwrap();
        assert_eq!(watcher.role, Role::Administrator);

        accounts::set_role(&state.db, "second", Role::Monitor)
            .await
            .unwrap();
        let refused = send(&state, "POST", "/configure/accounts/watcher/role", &second).await;
        assert_eq!(
            refused.status(),
            StatusCode::FORBIDDEN,
            "the same session, demoted"
        );
    }
}
