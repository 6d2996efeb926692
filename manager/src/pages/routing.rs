//! Configure → Routing: the seeds' page. The routing rules, and the group's settings (parent
//! caching, the parent list in the `host:port; host:port;` form, round robin, going direct,
//! parent health) as `pages::settings` draws them, then Make These Changes.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Form;
use canopy_config::config::{Config, Group, ParentRule};

use super::settings::{self, SettingField};
use super::{
    apply_and_show, current_version, Answer, Chrome, Editing, Notice, NoticePage, Refusal,
    NOT_SAVED,
};
use crate::accounts::Session;
use crate::auth::FormData;
use crate::state::AppState;

/// This page's address.
pub const HERE: &str = "/configure/routing";

#[derive(Template, WebTemplate)]
#[template(path = "routing.html")]
pub struct RoutingPage {
    chrome: Chrome,
    fields: Vec<SettingField>,
    editing: Editing,
    notice: Option<Notice>,
    /// Errors about settings this page does not show.
    other_errors: Vec<String>,
    /// Routing rules (parent.config), which come before the parent list; the table's
    /// buttons send them to `pages::rules`.
    rules: Vec<ParentRule>,
}

impl RoutingPage {
    fn new(session: &Session, editing: &Editing) -> RoutingPage {
        RoutingPage {
            chrome: Chrome::new(session, "routing"),
            fields: settings::fields_of(Group::Routing.settings(), editing),
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
    let mut page = RoutingPage::new(session, editing);
    let values = settings::take_posted(&mut page.fields, form);
    let mut config = editing.config().clone();
    if let Err(errors) = config.set_all(values.iter().map(|(k, v)| (*k, v.as_str()))) {
        settings::place_errors(&mut page.fields, &mut page.other_errors, &errors);
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
        config.set("retry_time_s", "4000").unwrap();
        let in_force = db.save(&config, "t", "a", None).await.unwrap();
        db.mark(in_force, VersionState::Applied, None)
            .await
            .unwrap();
        config.set("retry_time_s", "4001").unwrap();
        let rejected = db.save(&config, "t", "b", None).await.unwrap();
        db.mark(
            rejected,
            VersionState::Rejected,
            Some("parent list refused"),
        )
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
                "Version {rejected} was rejected: parent list refused. This form shows version \
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
