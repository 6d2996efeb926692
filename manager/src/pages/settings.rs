//! Configure → one page per group of settings (Proxy, Cache, ICP, Timeouts, Logging,
//! Console): every setting of the group, drawn from the config model (its help, its value,
//! its default), then Make These Changes. A setting added to the model appears on its
//! group's page by itself. Routing's settings are on the Routing page, which also holds
//! the routing rules; it draws the same fields (`fields_of`).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Form;
use canopy_config::config::{Config, ConfigErrors, Control, FieldError, Group, Setting};

use super::{check_form, make_changes, Answer, Chrome, Editing, Notice, Refusal, NOT_SAVED};
use crate::accounts::Session;
use crate::auth::FormData;
use crate::state::AppState;

/// One setting as its form shows it.
#[derive(Debug, Clone)]
pub struct SettingField {
    pub key: &'static str,
    help: &'static str,
    control: Control,
    /// What the control holds: the configured value, or the one posted.
    pub value: String,
    /// The value of the version in force, written as `canopy config list` writes it.
    in_force: String,
    default: String,
    pub error: Option<String>,
}

impl SettingField {
    fn new(setting: &Setting, shown: &Config, in_force: &Config, defaults: &Config) -> Self {
        let text = |config: &Config| config.get(setting.key).unwrap_or_default();
        let mut field = SettingField {
            key: setting.key,
            help: setting.help,
            control: setting.control,
            value: String::new(),
            in_force: text(in_force),
            default: text(defaults),
            error: None,
        };
        field.value = field.as_written(&text(shown));
        field
    }

    /// `text` as the control holds it: a list one item per line.
    fn as_written(&self, text: &str) -> String {
        match self.control {
            Control::List => text.split(", ").collect::<Vec<_>>().join("\n"),
            _ => text.to_owned(),
        }
    }

    /// Which control draws it: checkbox, number, text, list or choice.
    pub fn kind(&self) -> &'static str {
        match self.control {
            Control::Checkbox => "checkbox",
            Control::Number => "number",
            Control::Text => "text",
            Control::List => "list",
            Control::Choice(_) => "choice",
        }
    }

    pub fn options(&self) -> &'static [(&'static str, &'static str)] {
        match self.control {
            Control::Choice(options) => options,
            _ => &[],
        }
    }

    pub fn on(&self) -> bool {
        self.value == "true"
    }

    /// Whether a choice's option is the one chosen.
    pub fn is(&self, option: &str) -> bool {
        self.value == option
    }

    /// Lines of a list's box: its items and room for one more.
    pub fn rows(&self) -> usize {
        (self.value.lines().count() + 1).clamp(3, 12)
    }

    /// The help as HTML: the model's text escaped, `code` in code font.
    pub fn help_html(&self) -> String {
        let escaped = askama::filters::escape(self.help, askama::filters::Html)
            .map(|e| e.to_string())
            .unwrap_or_default();
        let mut html = String::new();
        for (i, part) in escaped.split('`').enumerate() {
            if i % 2 == 1 {
                html.push_str(&format!("<code>{part}</code>"));
            } else {
                html.push_str(part);
            }
        }
        html
    }

    pub fn default_shown(&self) -> &str {
        shown(&self.default)
    }

    /// The value in force, when the control holds another one (a posted value refused).
    pub fn in_force_if_other(&self) -> Option<&str> {
        (self.as_written(&self.in_force) != self.value).then(|| shown(&self.in_force))
    }

    /// The value the proxy's settings take from what the form posted: an unchecked box is
    /// off; `None` when the form did not carry the field.
    fn posted(&self, form: &FormData) -> Option<String> {
        match self.control {
            Control::Checkbox => Some(form.checked(self.key).to_string()),
            // Browsers send a textarea's lines ended by CR LF.
            Control::List => form.get(self.key).map(|text| text.replace("\r\n", "\n")),
            _ => form.get(self.key).map(str::to_owned),
        }
    }

    /// The error as said under the field: what was wrong with which value.
    fn explain(&self, e: &FieldError) -> String {
        if self.control == Control::Checkbox || e.message.contains(&format!("{:?}", e.value)) {
            e.message.clone()
        } else {
            format!("{:?}: {}", e.value, e.message)
        }
    }
}

fn shown(text: &str) -> &str {
    if text.is_empty() {
        "empty"
    } else {
        text
    }
}

/// The fields of `settings` as `editing` shows them.
pub fn fields_of<'a>(
    settings: impl Iterator<Item = &'a Setting>,
    editing: &Editing,
) -> Vec<SettingField> {
    let defaults = Config::default();
    settings
        .map(|s| SettingField::new(s, editing.config(), &editing.in_force.config, &defaults))
        .collect()
}

/// What the form posted for `fields`, as (key, value) for `Config::set_all`; each field's
/// control then holds what was posted, so a refused form keeps the admin's text.
pub fn take_posted(fields: &mut [SettingField], form: &FormData) -> Vec<(&'static str, String)> {
    let mut values = Vec::new();
    for field in fields.iter_mut() {
        if let Some(value) = field.posted(form) {
            field.value = value.clone();
            values.push((field.key, value));
        }
    }
    values
}

/// Puts each error under its field; errors about settings not on the page go in `other`.
pub fn place_errors(fields: &mut [SettingField], other: &mut Vec<String>, errors: &ConfigErrors) {
    for e in &errors.0 {
        match fields.iter_mut().find(|f| f.key == e.key) {
            Some(field) if field.error.is_none() => field.error = Some(field.explain(e)),
            Some(_) => {}
            None => other.push(e.to_string()),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "settings.html")]
pub struct SettingsPage {
    chrome: Chrome,
    group: Group,
    fields: Vec<SettingField>,
    editing: Editing,
    notice: Option<Notice>,
    /// Where the console listens now, after Make These Changes moved it.
    moved: Option<Moved>,
    /// Errors about settings this page does not show.
    other_errors: Vec<String>,
}

/// The console's new address after `manager_listen` changed.
#[derive(Debug, Clone)]
pub enum Moved {
    /// It listens at this address now (a link).
    To(String),
    /// `--listen` holds it where it is; the new address is used when started without it.
    Pinned { now: String, saved: String },
}

impl SettingsPage {
    fn new(session: &Session, group: Group, editing: &Editing) -> SettingsPage {
        SettingsPage {
            chrome: Chrome::new(session, group.slug()),
            group,
            fields: fields_of(group.settings(), editing),
            editing: editing.clone(),
            notice: None,
            moved: None,
            other_errors: Vec::new(),
        }
    }

    fn here(&self) -> String {
        format!("/configure/{}", self.group.slug())
    }
}

/// The group a page address names; Routing has a page of its own.
fn group_of(slug: &str) -> Result<Group, Refusal> {
    match Group::from_slug(slug) {
        Some(group) if group != Group::Routing => Ok(group),
        _ => Err(Refusal::from(
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("404: there is no settings page {slug:?}."),
            )
                .into_response(),
        )),
    }
}

pub async fn form(session: Session, editing: Editing, Path(slug): Path<String>) -> Answer {
    let group = group_of(&slug)?;
    Ok(SettingsPage::new(&session, group, &editing).into_response())
}

pub async fn submit(
    State(state): State<AppState>,
    session: Session,
    Path(slug): Path<String>,
    headers: HeaderMap,
    Form(form): Form<FormData>,
) -> Answer {
    let group = group_of(&slug)?;
    let editing = match check_form(&state, &session, &form).await? {
        Ok(editing) => editing,
        Err(stale) => {
            let mut page = SettingsPage::new(&session, group, &stale.now);
            page.notice = Some(Notice::error(stale.reason));
            return Err(Refusal::with(StatusCode::CONFLICT, page));
        }
    };
    let mut page = SettingsPage::new(&session, group, &editing);
    let values = take_posted(&mut page.fields, &form);
    let mut config = editing.config().clone();
    if let Err(errors) = config.set_all(values.iter().map(|(k, v)| (*k, v.as_str()))) {
        place_errors(&mut page.fields, &mut page.other_errors, &errors);
        page.notice = Some(Notice::error(NOT_SAVED));
        return Err(Refusal::with(StatusCode::UNPROCESSABLE_ENTITY, page));
    }
    let before = editing.config().manager_listen;
    let changed = make_changes(&state, &session, &config, editing.based_on(), None).await?;
    let mut page = SettingsPage::new(&session, group, &changed.now);
    page.notice = Some(changed.notice);
    if changed.applied && config.manager_listen != before {
        page.moved = Some(moved(&state, config.manager_listen, &headers));
    }
    Ok((changed.status, page).into_response())
}

/// Where the console can be opened now that `manager_listen` is `listen`: an address on
/// every interface is reached by the name the admin used, on the new port.
fn moved(state: &AppState, listen: std::net::SocketAddr, headers: &HeaderMap) -> Moved {
    if let Some(pinned) = state.pinned_listen {
        return Moved::Pinned {
            now: format!("http://{pinned}/"),
            saved: listen.to_string(),
        };
    }
    let host = if listen.ip().is_unspecified() {
        let used = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<axum::http::uri::Authority>().ok());
        match used {
            Some(authority) => format!("{}:{}", authority.host(), listen.port()),
            None => listen.to_string(),
        }
    } else {
        listen.to_string()
    };
    Moved::To(format!("http://{host}/configure/console"))
}

#[cfg(test)]
mod tests {
    use canopy_config::config::SETTINGS;

    use super::*;

    fn field(key: &str, config: &Config) -> SettingField {
        let setting = SETTINGS.iter().find(|s| s.key == key).unwrap();
        SettingField::new(setting, config, &Config::default(), &Config::default())
    }

    #[test]
    fn a_list_is_one_item_per_line_and_posted_back_as_typed() {
        let mut config = Config::default();
        config
            .set("icp_allowed_clients", "10.0.0.0/8, ::1")
            .unwrap();
        let mut list = field("icp_allowed_clients", &config);
        assert_eq!(list.value, "10.0.0.0/8\n::1/128");
        assert_eq!(list.kind(), "list");
        assert_eq!(list.default_shown(), "empty");
        assert_eq!(list.in_force_if_other(), Some("empty"));
        let form = FormData(vec![("icp_allowed_clients".into(), "a\r\nb".into())]);
        let posted = take_posted(std::slice::from_mut(&mut list), &form);
        assert_eq!(posted, [("icp_allowed_clients", "a\nb".to_owned())]);
        assert_eq!(list.value, "a\nb", "the box keeps what was typed");
    }

    #[test]
    fn an_unticked_box_is_posted_as_off_and_a_missing_field_not_at_all() {
        let mut fields = vec![
            field("never_direct", &Config::default()),
            field("retry_time_s", &Config::default()),
        ];
        let posted = take_posted(&mut fields, &FormData(Vec::new()));
        assert_eq!(posted, [("never_direct", "false".to_owned())]);
    }

    #[test]
    fn help_is_escaped_and_its_code_drawn_as_code() {
        let parents = field("parents", &Config::default());
        let html = parents.help_html();
        assert!(
            html.contains("<code>host:port; host:port;</code>"),
            "{html}"
        );
        let purge = field("purge_allowed_clients", &Config::default()).help_html();
        assert!(purge.contains("<code>canopy purge</code>"), "{purge}");
        let timeout = field("request_timeout_s", &Config::default()).help_html();
        assert!(timeout.contains("a request&#39;s headers"), "{timeout}");
    }

    #[test]
    fn an_error_says_which_value_was_wrong() {
        let port = field("http_port", &Config::default());
        let e = FieldError::new(
            "http_port",
            "70000",
            "expected a port number from 1 to 65535",
        );
        assert_eq!(
            port.explain(&e),
            "\"70000\": expected a port number from 1 to 65535"
        );
        let mode = field("icp_mode", &Config::default());
        let e = FieldError::new("icp_mode", "x", "\"x\" is not an ICP mode");
        assert_eq!(mode.explain(&e), "\"x\" is not an ICP mode");
    }

    #[tokio::test]
    async fn a_console_held_by_listen_says_it_stays() {
        let dir = tempfile::tempdir().unwrap();
        let db = canopy_config::versions::Db::open(&dir.path().join("c.db"))
            .await
            .unwrap();
        let mut state = AppState::new(db, dir.path().join("canopy.sock"));
        let to: std::net::SocketAddr = "0.0.0.0:9090".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "console.example.com:8080".parse().unwrap());
        assert!(matches!(
            moved(&state, to, &headers),
            Moved::To(url) if url == "http://console.example.com:9090/configure/console"
        ));
        state.pinned_listen = Some("127.0.0.1:8080".parse().unwrap());
        assert!(matches!(
            moved(&state, to, &headers),
            Moved::Pinned { now, saved } if now == "http://127.0.0.1:8080/" && saved == "0.0.0.0:9090"
        ));
    }
}
