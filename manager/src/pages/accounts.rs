//! Configure → Accounts: who may use the console and with which role; add (with a password
//! given or generated and shown once), remove, change the role, set a new password. Only an
//! administrator gets here with a POST (see `auth::changes_need_an_administrator`).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Form;

use super::{when, Answer, Chrome, Fields, Notice, OrFailed, Refusal};
use crate::accounts::{self, AccountError, Role, Session};
use crate::auth::{self, csrf_ok, FormData, PathForm};
use crate::state::AppState;

/// One account as the list shows it.
pub struct AccountRow {
    pub name: String,
    pub role: Role,
    pub created: String,
    pub last_login: String,
    pub failed_logins: i64,
    /// The account of whoever looks at the page.
    pub yours: bool,
}

/// A password made by the console, shown on this page only.
pub struct ShownOnce {
    pub name: String,
    pub password: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "accounts.html")]
pub struct AccountsPage {
    chrome: Chrome,
    accounts: Vec<AccountRow>,
    notice: Option<Notice>,
    shown_once: Option<ShownOnce>,
    /// The add form: its values as posted after a refusal, and the error beside a field.
    fields: Fields,
}

impl AccountsPage {
    /// The role select's options: (value, words).
    pub fn roles(&self) -> Vec<(&'static str, String)> {
        Role::ALL
            .iter()
            .map(|role| (role.as_str(), role.to_string()))
            .collect()
    }
}

async fn page(
    state: &AppState,
    session: &Session,
    notice: Option<Notice>,
    shown_once: Option<ShownOnce>,
    fields: Fields,
) -> Result<AccountsPage, Refusal> {
    let accounts = accounts::list(&state.db)
        .await
        .or_failed("reading the accounts")?
        .into_iter()
        .map(|a| AccountRow {
            yours: a.name == session.user,
            created: when(&a.created_at),
            last_login: a
                .last_login_at
                .as_deref()
                .map(when)
                .unwrap_or_else(|| "never".to_owned()),
            failed_logins: a.failed_logins,
            role: a.role,
            name: a.name,
        })
        .collect();
    Ok(AccountsPage {
        chrome: Chrome::new(session, "accounts"),
        accounts,
        notice,
        shown_once,
        fields,
    })
}

fn add_form_defaults() -> Fields {
    let mut fields = Fields::default();
    fields.set("role", Role::Monitor.as_str());
    fields
}

pub async fn list(State(state): State<AppState>, session: Session) -> Answer {
    let page = page(&state, &session, None, None, add_form_defaults()).await?;
    Ok(page.into_response())
}

/// What an account change did, as the page's answer: its status and notice.
fn outcome(result: Result<String, AccountError>) -> Result<(StatusCode, Notice), Refusal> {
    match result {
        Ok(text) => Ok((StatusCode::OK, Notice { tone: "ok", text })),
        Err(AccountError::Database(e)) => Err(e).or_failed("changing the accounts"),
        Err(e) => Ok((
            refusal_status(&e),
            Notice::error(format!("Nothing was changed: {e}.")),
        )),
    }
}

fn refusal_status(e: &AccountError) -> StatusCode {
    match e {
        AccountError::NotFound(_) => StatusCode::NOT_FOUND,
        AccountError::Exists(_) | AccountError::LastAdministrator { .. } => StatusCode::CONFLICT,
        AccountError::Hashing(_) | AccountError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        AccountError::BadName(_)
        | AccountError::ShortPassword(_)
        | AccountError::UnknownRole(_) => StatusCode::BAD_REQUEST,
    }
}

/// Add an account: with the password given, or one generated and shown once.
pub async fn add(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<FormData>,
) -> Answer {
    if !csrf_ok(&session, &form) {
        return Err(auth::forbidden().into());
    }
    let name = form.get("name").unwrap_or_default().trim();
    let given = form.get("password").unwrap_or_default();
    let mut fields = Fields::default();
    fields.set("name", name);
    fields.set("role", form.get("role").unwrap_or_default());
    let password = match given {
        "" => accounts::generate_password().or_failed("making a password")?,
        given => given.to_owned(),
    };
    let added = async {
        let role: Role = form.get("role").unwrap_or_default().parse()?;
        accounts::add(&state.db, name, role, &password).await?;
        Ok(role)
    }
    .await;
    let (status, notice, shown_once) = match added {
        Ok(role) => {
            fields = add_form_defaults();
            let text = format!("Account {name} added, {}.", role.with_article());
            let shown = given.is_empty().then(|| ShownOnce {
                name: name.to_owned(),
                password,
            });
            (StatusCode::OK, Notice { tone: "ok", text }, shown)
        }
        Err(e) => {
            let key = match e {
                AccountError::ShortPassword(_) => "password",
                AccountError::UnknownRole(_) => "role",
                _ => "name",
            };
            fields.set_error(key, e.to_string());
            let (status, notice) = outcome(Err(e))?;
            (status, notice, None)
        }
    };
    let page = page(&state, &session, Some(notice), shown_once, fields).await?;
    Ok((status, page).into_response())
}

/// A button of an account's row: the account it is about, when its form carries the
/// session's CSRF token (403 otherwise).
pub struct AccountButton {
    session: Session,
    name: String,
    form: FormData,
}

impl FromRequest<AppState> for AccountButton {
    type Rejection = Refusal;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Refusal> {
        let PathForm {
            session,
            path: name,
            form,
        } = PathForm::from_request(request, state).await?;
        Ok(AccountButton {
            session,
            name,
            form,
        })
    }
}

/// The accounts page after a row's button, with what it did.
async fn after(
    state: &AppState,
    session: &Session,
    result: Result<String, AccountError>,
    shown_once: Option<ShownOnce>,
) -> Answer {
    let (status, notice) = outcome(result)?;
    let page = page(
        state,
        session,
        Some(notice),
        shown_once,
        add_form_defaults(),
    )
    .await?;
    Ok((status, page).into_response())
}

pub async fn remove(State(state): State<AppState>, button: AccountButton) -> Answer {
    let AccountButton { session, name, .. } = button;
    let result = accounts::remove(&state.db, &name)
        .await
        .map(|()| format!("Account {name} removed; its sessions are logged out."));
    after(&state, &session, result, None).await
}

pub async fn set_role(State(state): State<AppState>, button: AccountButton) -> Answer {
    let AccountButton {
        session,
        name,
        form,
    } = button;
    let result = async {
        let role: Role = form.get("role").unwrap_or_default().parse()?;
        accounts::set_role(&state.db, &name, role).await?;
        Ok(format!(
            "{name} is now {}, from its next request on.",
            role.with_article()
        ))
    }
    .await;
    after(&state, &session, result, None).await
}

/// A new generated password for the account, shown once; its sessions end.
pub async fn new_password(State(state): State<AppState>, button: AccountButton) -> Answer {
    let AccountButton { session, name, .. } = button;
    let password = accounts::generate_password().or_failed("making a password")?;
    let result = accounts::change_password(&state.db, &name, &password)
        .await
        .map(|()| format!("{name} has a new password; its sessions are logged out."));
    let shown = result.is_ok().then(|| ShownOnce {
        name: name.clone(),
        password,
    });
    after(&state, &session, result, shown).await
}
