//! Configure → Routing: the seeds' page. Parent caching, the parent list in the
//! `host:port; host:port;` form, round robin, and the ICP settings, then Make These Changes.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Form;
use canopy_config::config::{Config, ConfigErrors, ParentRule};

use super::{
    apply_and_show, current_version, Answer, Chrome, Editing, Fields, Notice, NoticePage, Refusal,
    NOT_SAVED,
};
use crate::accounts::Session;
use crate::auth::FormData;
use crate::state::AppState;

/// This page's address.
pub const HERE: &str = "/configure/routing";

/// The settings this page edits, in the order it shows them.
pub const KEYS: &[&str] = &[
    "parent_caching",
    "parents",
    "round_robin",
    "icp_mode",
    "icp_port",
    "icp_multicast_enabled",
    "icp_multicast_group",
    "icp_multicast_ttl",
    "icp_query_timeout_ms",
];

#[derive(Template, WebTemplate)]
#[template(path = "routing.html")]
pub struct RoutingPage {
    chrome: Chrome,
    fields: Fields,
    editing: Editing,
    notice: Option<Notice>,
    /// Errors about settings this page does not show.
    other_errors: Vec<String>,
    /// Routing rules (parent.config), which come before the list above; the table's
    /// buttons send them to `pages::rules`.
    rules: Vec<ParentRule>,
}

impl RoutingPage {
    fn new(session: &Session, editing: &Editing) -> RoutingPage {
        RoutingPage {
            chrome: Chrome::new(session, "routing"),
            fields: configured(editing.config()),
            editing: editing.clone(),
            notice: None,
            other_errors: Vec::new(),
            rules: editing.config().parent_rules.clone(),
        }
    }

    /// This page's address, for the link that opens a rejected version here.
    fn here(&self) -> &'static str {
        HERE
    }
}

/// The page as `editing` shows it, with `notice` at the top.
pub fn page(session: &Session, editing: &Editing, notice: Option<Notice>) -> RoutingPage {
    let mut page = RoutingPage::new(session, editing);
    page.notice = notice;
    page
}

impl NoticePage for RoutingPage {
    fn with_notice(session: &Session, now: &Editing, notice: Notice) -> RoutingPage {
        page(session, now, Some(notice))
    }
}

fn configured(config: &Config) -> Fields {
    let mut fields = Fields::default();
    for key in KEYS {
        fields.set(key, config.get(key).unwrap_or_default());
    }
    // 0 means automatic; the form shows that as an empty box.
    if fields.v("icp_query_timeout_ms") == "0" {
        fields.set("icp_query_timeout_ms", "");
    }
    fields
}

/// The form's fields as the proxy's settings take them: unchecked boxes are off, an empty
/// query timeout is 0 (automatic).
fn posted(form: &FormData) -> Vec<(&'static str, String)> {
    KEYS.iter()
        .map(|key| {
            let value = match *key {
                "parent_caching" | "icp_multicast_enabled" => {
                    (if form.checked(key) { "true" } else { "false" }).to_owned()
                }
                "round_robin" => form.get(key).unwrap_or("false").to_owned(),
                "icp_query_timeout_ms" => match form.get(key).map(str::trim) {
                    None | Some("") => "0".to_owned(),
                    Some(v) => v.to_owned(),
                },
                _ => form.get(key).unwrap_or_default().to_owned(),
            };
            (*key, value)
        })
        .collect()
}

/// A message for a number the proxy could not even parse, in the form's words.
fn friendly(key: &str, value: &str, message: &str) -> String {
    if message.starts_with("expected") || message.contains(" is not ") {
        return message.to_owned();
    }
    let expected = match key {
        "icp_port" => "a port number from 1 to 65535",
        "icp_multicast_ttl" => "a TTL from 1 to 255",
        "icp_query_timeout_ms" => "empty or 0 (automatic), or up to 60000 milliseconds",
        _ => return message.to_owned(),
    };
    format!("{value:?} is not {expected}")
}

/// Puts each error beside its field; errors about other settings go above the form.
pub fn place_errors(fields: &mut Fields, other: &mut Vec<String>, errors: &ConfigErrors) {
    for e in &errors.0 {
        if KEYS.contains(&e.key.as_str()) {
            fields.set_error(&e.key, friendly(&e.key, &e.value, &e.message));
        } else {
            other.push(e.to_string());
        }
    }
}

pub async fn form(
    State(state): State<AppState>,
    session: Session,
    editing: Editing,
) -> RoutingPage {
    let notice = state.landing.take(&session, HERE);
    page(&session, &editing, notice)
}

pub async fn submit(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<FormData>,
) -> Answer {
    let editing = current_version::<RoutingPage>(&state, &session, &form).await?;
    let config = with_posted(&session, &editing, &form)?;
    apply_and_show::<RoutingPage>(&state, &session, &config, editing.based_on(), None, HERE).await
}

/// The config `editing` shows with this page's fields as posted; or the page (422) with
/// each wrong field marked and the values as typed.
pub fn with_posted(
    session: &Session,
    editing: &Editing,
    form: &FormData,
) -> Result<Config, Refusal> {
    let values = posted(form);
    let mut config = editing.config().clone();
    if let Err(errors) = config.set_all(values.iter().map(|(k, v)| (*k, v.as_str()))) {
        let mut page = RoutingPage::new(session, editing);
        for (key, _) in &values {
            page.fields.set(key, form.get(key).unwrap_or_default());
        }
        page.fields
            .set("parent_caching", form.checked("parent_caching").to_string());
        page.fields.set(
            "icp_multicast_enabled",
            form.checked("icp_multicast_enabled").to_string(),
        );
        place_errors(&mut page.fields, &mut page.other_errors, &errors);
        page.notice = Some(Notice::error(NOT_SAVED));
        return Err(Refusal::with(StatusCode::UNPROCESSABLE_ENTITY, page));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use canopy_config::versions::{Db, VersionState};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn the_form_shows_the_version_in_force_and_names_a_rejected_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
        let mut config = Config::default();
        config.set("icp_port", "4000").unwrap();
        let in_force = db.save(&config, "t", "a", None).await.unwrap();
        db.mark(in_force, VersionState::Applied, None)
            .await
            .unwrap();
        config.set("icp_port", "4001").unwrap();
        let rejected = db.save(&config, "t", "b", None).await.unwrap();
        db.mark(rejected, VersionState::Rejected, Some("ICP port taken"))
            .await
            .unwrap();
        crate::accounts::set_password(&db, "admin", "a long enough password")
            .await
            .unwrap();
        let session = crate::accounts::start_session(&db, "admin").await.unwrap();
        let state = AppState::new(db, dir.path().join("canopy.sock"));
        let request = Request::get("/configure/routing")
            .header("host", "127.0.0.1:8080")
            .header(
                "cookie",
                format!("{}={}", crate::auth::SESSION_COOKIE, session.id),
            )
            .body(Body::empty())
            .unwrap();
        let response = crate::router(state).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let page = String::from_utf8_lossy(&body);
        assert!(
            page.contains(&format!(
                "Version {rejected} was rejected: ICP port taken. This form shows version \
                 {in_force}, the one in force"
            )),
            "{page}"
        );
        assert!(page.contains("value=\"4000\""), "{page}");
        assert!(!page.contains("value=\"4001\""), "{page}");
        assert!(
            page.contains(&format!("Editing version {in_force}.")),
            "{page}"
        );
    }
}
