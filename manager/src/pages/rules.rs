//! Configure → Routing → rules: the parent.config rules of the Routing page, added, edited,
//! removed, moved and imported. Each change is checked by the proxy's own validation, saved
//! as a new config version and applied, like every other change on that page.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Form;
use canopy_config::config::{Config, ParentList, ParentRule, RoundRobin};
use canopy_config::import::parent_config;

use super::routing::{self, RoutingPage};
use super::{current_version, Answer, Chrome, Editing, Fields, Notice, Refusal, NOT_SAVED};
use crate::accounts::Session;
use crate::auth::FormData;
use crate::state::AppState;

/// The rule form's text fields, as `ParentRule` names them.
const TEXT_FIELDS: [&str; 9] = [
    "dest_domain",
    "dest_host",
    "dest_ip",
    "url_regex",
    "scheme",
    "port",
    "method",
    "parents",
    "round_robin",
];

#[derive(Template, WebTemplate)]
#[template(path = "rule_form.html")]
pub struct RuleFormPage {
    chrome: Chrome,
    /// The number of the rule being edited; 0 when adding one.
    number: usize,
    fields: Fields,
    editing: Editing,
    notice: Option<Notice>,
    other_errors: Vec<String>,
}

impl RuleFormPage {
    /// This page's address, for the link that opens a rejected version here.
    fn here(&self) -> String {
        match self.number {
            0 => "/configure/routing/rules/new".to_owned(),
            n => format!("/configure/routing/rules/{n}"),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "rules_import.html")]
pub struct ImportPage {
    chrome: Chrome,
    /// parent.config lines: the rules shown, or what the admin pasted.
    text: String,
    editing: Editing,
    notice: Option<Notice>,
    /// What stops the import, line by line.
    problems: Vec<String>,
}

impl ImportPage {
    fn here(&self) -> &'static str {
        "/configure/routing/rules/import"
    }
}

fn rule_fields(rule: &ParentRule) -> Fields {
    let mut fields = Fields::default();
    let optional = [
        ("dest_domain", &rule.dest_domain),
        ("dest_host", &rule.dest_host),
        ("dest_ip", &rule.dest_ip),
        ("url_regex", &rule.url_regex),
        ("scheme", &rule.scheme),
        ("method", &rule.method),
    ];
    for (key, value) in optional {
        fields.set(key, value.clone().unwrap_or_default());
    }
    fields.set("port", rule.port.map(|p| p.to_string()).unwrap_or_default());
    fields.set("parents", rule.parents.to_string());
    fields.set("round_robin", rule.round_robin.as_str());
    fields.set("go_direct", rule.go_direct.to_string());
    fields
}

/// Reads the posted rule; a field that cannot even be parsed gets its error, and the rest
/// is left to the proxy's validation of the whole config.
fn read_rule(form: &FormData) -> (ParentRule, Fields) {
    let mut fields = Fields::default();
    for key in TEXT_FIELDS {
        fields.set(key, form.get(key).unwrap_or_default().trim());
    }
    fields.set("go_direct", form.checked("go_direct").to_string());
    let optional = |key: &str| Some(fields.v(key).to_owned()).filter(|v| !v.is_empty());
    let mut rule = ParentRule {
        dest_domain: optional("dest_domain"),
        dest_host: optional("dest_host"),
        dest_ip: optional("dest_ip"),
        url_regex: optional("url_regex"),
        scheme: optional("scheme"),
        method: optional("method"),
        go_direct: fields.on("go_direct"),
        ..ParentRule::default()
    };
    if !fields.v("port").is_empty() {
        match fields.v("port").parse::<u16>() {
            Ok(port) => rule.port = Some(port),
            Err(_) => {
                let message = format!(
                    "{:?} is not a port number from 1 to 65535",
                    fields.v("port")
                );
                fields.set_error("port", message);
            }
        }
    }
    match fields.v("parents").parse::<ParentList>() {
        Ok(parents) => rule.parents = parents,
        Err(e) => fields.set_error("parents", e),
    }
    match fields.v("round_robin").parse::<RoundRobin>() {
        Ok(mode) => rule.round_robin = mode,
        Err(e) => fields.set_error("round_robin", e),
    }
    (rule, fields)
}

/// Which field of the form an error of the proxy's rule validation belongs beside, and the
/// message without the field's name in front.
fn field_of(message: &str) -> Option<(&'static str, &str)> {
    for field in ["dest_ip", "url_regex", "scheme", "port", "method"] {
        if let Some(rest) = message.strip_prefix(field) {
            return Some((field, rest.trim_start_matches(':').trim_start()));
        }
    }
    if message.starts_with("a rule needs") {
        Some(("matcher", message))
    } else if message.contains("go_direct") {
        Some(("parents", message))
    } else {
        None
    }
}

/// A regex error as one line: the regex crate's message draws a caret under the pattern
/// over several lines, then says what is wrong on its last.
fn one_line(message: &str) -> String {
    match message.split_once('\n') {
        None => message.to_owned(),
        Some((first, rest)) => {
            let what = rest.lines().last().unwrap_or_default();
            format!(
                "{} {}",
                first.trim_end_matches("regex parse error:").trim_end(),
                what.trim_start_matches("error: ")
            )
        }
    }
}

/// What the posted form changes (see [`current_version`]); refused on the Routing page.
async fn current(state: &AppState, session: &Session, form: &FormData) -> Result<Editing, Refusal> {
    current_version::<RoutingPage>(state, session, form).await
}

/// The config a rule button starts from: the Routing page's buttons post the whole form,
/// so what was typed in its fields is saved with the rule's change, not dropped.
fn with_routing_fields(
    session: &Session,
    editing: &Editing,
    form: &FormData,
) -> Result<Config, Refusal> {
    match form.get("form") {
        Some("routing") => routing::with_posted(session, editing, form),
        _ => Ok(editing.config().clone()),
    }
}

/// Saves and applies `config`, then redirects to the Routing page, which says what happened.
async fn apply_and_show(
    state: &AppState,
    session: &Session,
    config: &Config,
    based_on: i64,
    what: &str,
) -> Answer {
    super::apply_and_show::<RoutingPage>(
        state,
        session,
        config,
        based_on,
        Some(what),
        routing::HERE,
    )
    .await
}

/// The Routing page, refusing a change to a rule that is not there.
fn no_such_rule(session: &Session, editing: &Editing, text: String) -> Response {
    let page = routing::page(session, editing, Some(Notice::error(text)));
    (StatusCode::NOT_FOUND, page).into_response()
}

fn form_page(session: &Session, editing: &Editing, number: usize, fields: Fields) -> RuleFormPage {
    RuleFormPage {
        chrome: Chrome::new(session, "routing"),
        number,
        fields,
        editing: editing.clone(),
        notice: None,
        other_errors: Vec::new(),
    }
}

pub async fn new_form(session: Session, editing: Editing) -> RuleFormPage {
    let rule = ParentRule {
        go_direct: true,
        ..ParentRule::default()
    };
    form_page(&session, &editing, 0, rule_fields(&rule))
}

pub async fn edit_form(session: Session, Path(number): Path<usize>, editing: Editing) -> Answer {
    let rule = number
        .checked_sub(1)
        .and_then(|i| editing.config().parent_rules.get(i))
        .ok_or_else(|| no_such_rule(&session, &editing, format!("There is no rule {number}.")))?;
    Ok(form_page(&session, &editing, number, rule_fields(rule)).into_response())
}

/// Adds the posted rule at the end (`number` empty or 0) or replaces rule `number`.
pub async fn submit(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<FormData>,
) -> Answer {
    let editing = current(&state, &session, &form).await?;
    let number = form
        .get("number")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    let (rule, mut fields) = read_rule(&form);
    let mut config = editing.config().clone();
    let rules = &mut config.parent_rules;
    let (index, what) = if number == 0 {
        rules.push(rule);
        (rules.len(), "added rule")
    } else if let Some(slot) = rules.get_mut(number - 1) {
        *slot = rule;
        (number, "changed rule")
    } else {
        return Err(no_such_rule(
            &session,
            &editing,
            format!("Nothing was saved: there is no rule {number} any more."),
        )
        .into());
    };
    let mut other_errors = Vec::new();
    if let Err(errors) = config.validate() {
        let key = format!("parent_rules.{index}");
        for e in errors.0 {
            match field_of(&e.message).filter(|_| e.key == key) {
                Some((field, message)) => fields.set_error(field, one_line(message)),
                None => other_errors.push(e.to_string()),
            }
        }
    }
    if fields.has_errors() || !other_errors.is_empty() {
        let mut page = form_page(&session, &editing, number, fields);
        page.notice = Some(Notice::error(NOT_SAVED));
        page.other_errors = other_errors;
        return Err(Refusal::with(StatusCode::UNPROCESSABLE_ENTITY, page));
    }
    let what = format!(
        "{what} {index} ({})",
        config.parent_rules[index - 1].matcher()
    );
    apply_and_show(&state, &session, &config, editing.based_on(), &what).await
}

pub async fn remove(
    State(state): State<AppState>,
    session: Session,
    Path(number): Path<usize>,
    Form(form): Form<FormData>,
) -> Answer {
    let editing = current(&state, &session, &form).await?;
    let mut config = with_routing_fields(&session, &editing, &form)?;
    if number == 0 || number > config.parent_rules.len() {
        return Err(no_such_rule(&session, &editing, format!("There is no rule {number}.")).into());
    }
    let removed = config.parent_rules.remove(number - 1);
    let what = format!("removed rule {number} ({})", removed.matcher());
    apply_and_show(&state, &session, &config, editing.based_on(), &what).await
}

pub async fn move_up(
    State(state): State<AppState>,
    session: Session,
    Path(number): Path<usize>,
    Form(form): Form<FormData>,
) -> Answer {
    move_rule(state, session, form, number, number.wrapping_sub(1), "up").await
}

pub async fn move_down(
    State(state): State<AppState>,
    session: Session,
    Path(number): Path<usize>,
    Form(form): Form<FormData>,
) -> Answer {
    move_rule(
        state,
        session,
        form,
        number,
        number.saturating_add(1),
        "down",
    )
    .await
}

/// Swaps rule `number` with rule `with` (both counted from 1).
async fn move_rule(
    state: AppState,
    session: Session,
    form: FormData,
    number: usize,
    with: usize,
    direction: &str,
) -> Answer {
    let editing = current(&state, &session, &form).await?;
    let mut config = with_routing_fields(&session, &editing, &form)?;
    let count = config.parent_rules.len();
    if !(1..=count).contains(&number) {
        return Err(no_such_rule(
            &session,
            &editing,
            format!("Nothing was saved: there is no rule {number}."),
        )
        .into());
    }
    if !(1..=count).contains(&with) {
        let end = if direction == "up" { "first" } else { "last" };
        let page = routing::page(
            &session,
            &editing,
            Some(Notice::error(format!(
                "Nothing was saved: rule {number} is already the {end}."
            ))),
        );
        return Err(Refusal::with(StatusCode::UNPROCESSABLE_ENTITY, page));
    }
    config.parent_rules.swap(number - 1, with - 1);
    let what = format!("moved rule {number} {direction}");
    apply_and_show(&state, &session, &config, editing.based_on(), &what).await
}

pub async fn import_form(session: Session, editing: Editing) -> ImportPage {
    ImportPage {
        chrome: Chrome::new(&session, "routing"),
        text: editing
            .config()
            .parent_rules
            .iter()
            .map(|rule| parent_config::line(rule) + "\n")
            .collect(),
        editing,
        notice: None,
        problems: Vec::new(),
    }
}

/// Replaces every rule with the pasted parent.config lines: all of them, or none when a line
/// cannot be read or a rule is refused; what Canopy ignores is said with the outcome.
pub async fn import(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<FormData>,
) -> Answer {
    let editing = current(&state, &session, &form).await?;
    let text = form.get("rules").unwrap_or_default().to_owned();
    let mut config = editing.config().clone();
    let mut ignored = Vec::new();
    let problems = match parent_config::parse(&text) {
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
        Ok(import) => {
            let lines: Vec<usize> = import.rules.iter().map(|r| r.line).collect();
            ignored = import.ignored.iter().map(ToString::to_string).collect();
            config.parent_rules = import.into_rules();
            match config.validate() {
                Ok(()) => Vec::new(),
                Err(errors) => errors
                    .0
                    .into_iter()
                    .map(|e| {
                        let line = e
                            .key
                            .strip_prefix("parent_rules.")
                            .and_then(|n| n.parse::<usize>().ok())
                            .and_then(|n| lines.get(n - 1));
                        match line {
                            Some(line) => format!("line {line}: {}", e.message),
                            None => e.to_string(),
                        }
                    })
                    .collect(),
            }
        }
    };
    if !problems.is_empty() {
        let page = ImportPage {
            chrome: Chrome::new(&session, "routing"),
            text,
            editing: editing.clone(),
            notice: Some(Notice::error(
                "Nothing was imported: correct the lines below, then press Make These Changes again.",
            )),
            problems,
        };
        return Err(Refusal::with(StatusCode::UNPROCESSABLE_ENTITY, page));
    }
    let what = format!(
        "imported {} rules from parent.config",
        config.parent_rules.len()
    );
    super::apply_and_warn::<RoutingPage>(
        &state,
        &session,
        &config,
        editing.based_on(),
        Some(&what),
        routing::HERE,
        &ignored,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_error_of_the_proxy_has_a_field() {
        let rule = ParentRule {
            dest_ip: Some("10.0.0.0/33".into()),
            url_regex: Some("(".into()),
            scheme: Some("gopher".into()),
            port: Some(0),
            method: Some("get".into()),
            ..ParentRule::default()
        };
        let no_matcher = ParentRule {
            go_direct: true,
            ..ParentRule::default()
        };
        let config = Config {
            parent_rules: vec![rule, no_matcher],
            ..Config::default()
        };
        let errors = config.validate().unwrap_err();
        let mut fields: Vec<&str> = errors
            .0
            .iter()
            .map(|e| field_of(&e.message).map_or("(none)", |(field, _)| field))
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "dest_ip",
                "matcher",
                "method",
                "parents",
                "port",
                "scheme",
                "url_regex"
            ]
        );
    }

    #[test]
    fn a_regex_error_fits_on_one_line() {
        let message = "does not compile: regex parse error:\n    (\n    ^\nerror: unclosed group";
        assert_eq!(one_line(message), "does not compile: unclosed group");
        assert_eq!(one_line("expected 1 to 65535"), "expected 1 to 65535");
    }
}
