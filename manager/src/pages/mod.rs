//! The console's pages: one module per page, sharing the frame (navigation, user, CSRF
//! token), the form-field helper and the formatting of numbers and times.

pub mod accounts;
pub mod clients;
pub mod history;
pub mod landing;
pub mod login;
pub mod monitor;
pub mod nodes;
pub mod peers;
pub mod purge;
pub mod routing;
pub mod rules;
pub mod settings;

use std::collections::BTreeMap;
use std::fmt::Display;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use canopy_config::config::Config;
use canopy_config::versions::ConfigVersion;

use crate::accounts::{Role, Session};
use crate::apply::{self, ApplyError, Made};
pub use crate::notice::Notice;

/// What the frame around every page needs: who is logged in, the CSRF token of the logout
/// form, which navigation entry is current, and whether the account may change anything
/// (a monitor's pages show their forms disabled).
#[derive(Debug, Clone)]
pub struct Chrome {
    pub user: String,
    pub csrf: String,
    pub active: &'static str,
    pub role: Role,
    pub read_only: bool,
}

impl Chrome {
    pub fn new(session: &Session, active: &'static str) -> Chrome {
        Chrome {
            user: session.user.clone(),
            csrf: session.csrf.clone(),
            active,
            role: session.role,
            read_only: !session.role.may_change(),
        }
    }
}

impl From<&Made> for Notice {
    fn from(made: &Made) -> Notice {
        let notice = Notice {
            tone: made.outcome.tone(),
            text: made.outcome.message(),
        };
        notice.warning(&made.unresolved)
    }
}

/// A form's values (as posted, or as configured) and the error beside each wrong field.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    values: BTreeMap<String, String>,
    errors: BTreeMap<String, String>,
}

impl Fields {
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.values.insert(key.to_owned(), value.into());
    }

    pub fn set_error(&mut self, key: &str, message: impl Into<String>) {
        self.errors.entry(key.to_owned()).or_insert(message.into());
    }

    pub fn v(&self, key: &str) -> &str {
        self.values.get(key).map(String::as_str).unwrap_or("")
    }

    /// A checkbox's state: any of the proxy's spellings of "on".
    pub fn on(&self, key: &str) -> bool {
        matches!(self.v(key), "true" | "on" | "strict" | "yes" | "1")
    }

    /// Whether a select's option is the chosen one.
    pub fn is(&self, key: &str, value: &str) -> bool {
        self.v(key) == value
    }

    pub fn err(&self, key: &str) -> Option<&str> {
        self.errors.get(key).map(String::as_str)
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }
}

/// What a configure page shows and its forms change. Every form is made from the version
/// in force (`based_on`, so a change saved meanwhile is noticed); when the admin opened the
/// newer version the proxy rejected, to fix it, the page shows that version's values and
/// changes start from them.
#[derive(Debug, Clone)]
pub struct Editing {
    pub in_force: ConfigVersion,
    /// The newest version the proxy rejected after the one in force, if any.
    pub rejected: Option<ConfigVersion>,
    /// Whether the page shows `rejected` instead of the version in force.
    pub opened: bool,
}

impl Editing {
    /// The version in force and the rejected one after it; `open`: the rejected version the
    /// admin asked to see (`?rejected=N`), opened only when it is that one.
    pub async fn load(
        state: &crate::state::AppState,
        open: Option<i64>,
    ) -> Result<Editing, Refusal> {
        let in_force = in_force(state).await?;
        let rejected = state
            .db
            .rejected_after(in_force.id)
            .await
            .or_failed("reading the config")?;
        let opened = open.is_some() && open == rejected.as_ref().map(|v| v.id);
        Ok(Editing {
            in_force,
            rejected,
            opened,
        })
    }

    /// The config the page shows and changes start from.
    pub fn config(&self) -> &Config {
        match &self.rejected {
            Some(rejected) if self.opened => &rejected.config,
            _ => &self.in_force.config,
        }
    }

    pub fn based_on(&self) -> i64 {
        self.in_force.id
    }

    /// `?rejected=N` while a rejected version is open, so links to other forms keep it.
    pub fn query(&self) -> String {
        match &self.rejected {
            Some(rejected) if self.opened => format!("?rejected={}", rejected.id),
            _ => String::new(),
        }
    }

    /// Why the proxy rejected the version after the one in force.
    pub fn reason(&self) -> &str {
        self.rejected
            .as_ref()
            .and_then(|v| v.state_reason.as_deref())
            .unwrap_or("no reason kept")
    }
}

/// A configure page's query: `?rejected=N` opens rejected version N in its form.
#[derive(Debug, serde::Deserialize)]
struct Open {
    rejected: Option<i64>,
}

/// What a configure page shows, for its handler: `?rejected=N` opens rejected version N.
impl FromRequestParts<crate::state::AppState> for Editing {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::state::AppState,
    ) -> Result<Editing, Refusal> {
        let Query(open) = Query::<Open>::from_request_parts(parts, state)
            .await
            .map_err(|e| Refusal::from(e.into_response()))?;
        Editing::load(state, open.rejected).await
    }
}

/// What a posted form changes, when it carries this session's CSRF token and was made from
/// the version in force (and, when it says so, from the rejected version waiting after it);
/// otherwise the answer to give instead: 403, or page `P` (409) with the values now in
/// force and why the form was refused.
pub async fn current_version<P: NoticePage>(
    state: &crate::state::AppState,
    session: &Session,
    form: &crate::auth::FormData,
) -> Result<Editing, Refusal> {
    match check_form(state, session, form).await? {
        Ok(editing) => Ok(editing),
        Err(stale) => {
            let page = P::with_notice(session, &stale.now, Notice::error(stale.reason));
            Err(Refusal::with(StatusCode::CONFLICT, page))
        }
    }
}

/// A form made from a version no longer in force, or from a rejected version no longer
/// waiting to be fixed: what is in force now, and why the form was refused.
pub struct StaleForm {
    pub now: Editing,
    pub reason: String,
}

/// What a posted form changes (see `current_version`), or why it was refused as stale;
/// 403 without this session's CSRF token.
pub async fn check_form(
    state: &crate::state::AppState,
    session: &Session,
    form: &crate::auth::FormData,
) -> Result<Result<Editing, StaleForm>, Refusal> {
    if !crate::auth::csrf_ok(session, form) {
        return Err(crate::auth::forbidden().into());
    }
    let number = |key: &str| form.get(key).and_then(|v| v.parse::<i64>().ok());
    let open = number("rejected");
    let mut editing = Editing::load(state, open).await?;
    let reason = match (number("based_on"), open) {
        (based_on, _) if based_on != Some(editing.based_on()) => {
            stale_message(based_on.unwrap_or_default(), &editing.in_force)
        }
        (_, Some(open)) if !editing.opened => format!(
            "Not saved: this form showed rejected version {open}, which is no longer waiting to \
             be fixed (it was discarded, or a newer version was rejected since). The form now \
             shows version {}, the one in force.",
            editing.based_on()
        ),
        _ => return Ok(Ok(editing)),
    };
    editing.opened = false;
    Ok(Err(StaleForm {
        now: editing,
        reason,
    }))
}

/// The round robin modes as the forms offer them: (setting value, words).
pub const ROUND_ROBIN: &[(&str, &str)] = canopy_config::config::ROUND_ROBIN_MODES;

/// What a form says when something in it must be corrected first.
pub const NOT_SAVED: &str =
    "Nothing was saved: correct the fields marked below, then press Make These Changes again.";

/// A page of what is in force with a notice at the top: where a form lands after Make These
/// Changes, or is refused.
pub trait NoticePage: IntoResponse {
    fn with_notice(session: &Session, now: &Editing, notice: Notice) -> Self;
}

/// Make These Changes from a form made from version `based_on`, then 303 to page `landing`,
/// which says what happened; or page `P` (409) of what is in force with the refusal of a
/// form made from a version no longer in force (nothing changed, so nothing to redirect).
pub async fn apply_and_show<P: NoticePage>(
    state: &crate::state::AppState,
    session: &Session,
    config: &Config,
    based_on: i64,
    what: Option<&str>,
    landing: &str,
) -> Answer {
    apply_and_warn::<P>(state, session, config, based_on, what, landing, &[]).await
}

/// As [`apply_and_show`], with `warnings` about a saved change (what an import ignored)
/// added to the notice.
pub async fn apply_and_warn<P: NoticePage>(
    state: &crate::state::AppState,
    session: &Session,
    config: &Config,
    based_on: i64,
    what: Option<&str>,
    landing: &str,
    warnings: &[String],
) -> Answer {
    let outcome = apply::make_these_changes(state, config, &session.user, based_on, what).await;
    match outcome {
        Ok(made) => Ok(landing::see_other(
            state,
            session,
            landing,
            Notice::from(&made).warning(warnings),
        )),
        Err(ApplyError::Stale { based_on, .. }) => {
            let now = Editing::load(state, None).await?;
            let notice = Notice::error(stale_message(based_on, &now.in_force));
            Err(Refusal::with(
                StatusCode::CONFLICT,
                P::with_notice(session, &now, notice),
            ))
        }
        Err(e) => Err(internal_error("saving the config", e).into()),
    }
}

/// What Make These Changes did, for the page shown after it.
pub struct Changed {
    pub status: StatusCode,
    /// What is in force now.
    pub now: Editing,
    pub notice: Notice,
    /// Whether the proxy runs the new version now.
    pub applied: bool,
}

/// Make These Changes from a form made from version `based_on`: the outcome, or the refusal
/// (409) of a form made from a version no longer in force.
pub async fn make_changes(
    state: &crate::state::AppState,
    session: &Session,
    config: &Config,
    based_on: i64,
    what: Option<&str>,
) -> Result<Changed, Refusal> {
    let outcome = apply::make_these_changes(state, config, &session.user, based_on, what).await;
    let now = Editing::load(state, None).await?;
    let (status, notice, applied) = match outcome {
        Ok(made) => (
            StatusCode::OK,
            Notice::from(&made),
            matches!(made.outcome, apply::Outcome::Applied { .. }),
        ),
        Err(ApplyError::Stale { based_on, .. }) => (
            StatusCode::CONFLICT,
            Notice::error(stale_message(based_on, &now.in_force)),
            false,
        ),
        Err(e) => return Err(internal_error("saving the config", e).into()),
    };
    Ok(Changed {
        status,
        now,
        notice,
        applied,
    })
}

/// Why a form made from version `based_on` was refused, now that `latest` is in force.
pub fn stale_message(based_on: i64, latest: &ConfigVersion) -> String {
    format!(
        "Not saved: this form was made from version {based_on}, but {} saved version {} at {} \
         meanwhile. Nothing was overwritten. The form now shows the current values; make \
         your change again if it is still needed.",
        latest.author,
        latest.id,
        when(&latest.created_at)
    )
}

/// A handler's answer: its page, or the answer given instead (403, a stale form refused,
/// 404, the console's own failure), which `?` returns early.
pub type Answer = Result<Response, Refusal>;

/// The answer a handler gives instead of its page. Boxed: a response is large, and this is
/// the rarer path.
#[derive(Debug)]
pub struct Refusal(Box<Response>);

impl Refusal {
    /// `page`, answered with `status` instead of the page asked for.
    pub fn with(status: StatusCode, page: impl IntoResponse) -> Refusal {
        Refusal::from((status, page).into_response())
    }
}

impl From<Response> for Refusal {
    fn from(response: Response) -> Refusal {
        Refusal(Box::new(response))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "not_found.html")]
struct NotFoundPage {
    chrome: Chrome,
    text: String,
    back: String,
    back_label: &'static str,
}

/// The page (404) saying that what was asked for is not there, in the console's frame,
/// with the way back to the page that lists what is.
pub fn not_found(
    session: &Session,
    active: &'static str,
    text: String,
    (back, back_label): (&str, &'static str),
) -> Response {
    let page = NotFoundPage {
        chrome: Chrome::new(session, active),
        text,
        back: back.to_owned(),
        back_label,
    };
    (StatusCode::NOT_FOUND, page).into_response()
}

/// Any address the console has no page for. Without a login it is a bare 404, not the
/// login page: a browser asks for `/favicon.ico` beside the login form, and a second login
/// page would replace the form's CSRF cookie.
pub async fn no_such_page(session: Result<Session, Response>, uri: axum::http::Uri) -> Response {
    let text = format!("The console has no page at {}.", uri.path());
    match session {
        Ok(session) => not_found(&session, "", text, ("/", "Go to the dashboard")),
        Err(_) => (StatusCode::NOT_FOUND, text).into_response(),
    }
}

/// The version edits start from (see `Db::in_force`).
pub async fn in_force(state: &crate::state::AppState) -> Result<ConfigVersion, Refusal> {
    state.db.in_force().await.or_failed("reading the config")
}

/// The console's own failure (its database, mostly) as the page shown instead, for `?`.
pub trait OrFailed<T> {
    /// `doing` says what the console was doing, as in "failed while reading the config".
    fn or_failed(self, doing: &str) -> Result<T, Refusal>;
}

impl<T, E: Display> OrFailed<T> for Result<T, E> {
    fn or_failed(self, doing: &str) -> Result<T, Refusal> {
        self.map_err(|e| internal_error(doing, e).into())
    }
}

/// The page shown when the console itself fails.
pub fn internal_error(context: &str, e: impl Display) -> Response {
    tracing::error!("{context}: {e}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("500: the console failed while {context}: {e}"),
    )
        .into_response()
}

/// An RFC 3339 time as people read it: `2026-11-22 21:05:03 UTC`.
pub fn when(rfc3339: &str) -> String {
    let trimmed = rfc3339.trim_end_matches('Z');
    let seconds = trimmed.split('.').next().unwrap_or(trimmed);
    format!("{} UTC", seconds.replacen('T', " ", 1))
}

/// A duration in the two largest units: `3 d 4 h`, `5 min 3 s`.
pub fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
}

/// Bytes with a binary unit: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

pub fn percent(ratio: f64) -> String {
    format!("{:.1} %", ratio * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_well() {
        assert_eq!(when("2026-11-22T21:05:03.123Z"), "2026-11-22 21:05:03 UTC");
        assert_eq!(duration(59), "59 s");
        assert_eq!(duration(3 * 86_400 + 4 * 3600 + 5), "3 d 4 h");
        assert_eq!(duration(3725), "1 h 2 min");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(percent(0.256), "25.6 %");
    }
}
