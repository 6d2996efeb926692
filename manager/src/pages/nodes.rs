//! The Nodes page: every proxy on this database (one for a lone Canopy, each node of a
//! fleet on a shared PostgreSQL), its state, the version in force, when it was last seen,
//! and its outcome for the newest version it tried; and each node's own settings (where it
//! listens, the name it shows), applied on that node at once.

use std::collections::BTreeMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Form;
use canopy_config::config::SETTINGS;
use canopy_config::nodes::{NodeState, NodeView, Outcome, HEARTBEAT_S, PER_NODE};
use canopy_config::versions::now_rfc3339;

use super::landing::see_other;
use super::{not_found, when, Answer, Chrome, Notice, OrFailed, Refusal};
use crate::accounts::Session;
use crate::auth::{self, csrf_ok, FormData};
use crate::proxy;
use crate::state::AppState;

/// One node's row, as the page shows it.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub name: String,
    /// running, stopped, or not seen (a running node that stopped writing its heartbeat).
    pub state: &'static str,
    pub http_listen: String,
    pub icp_listen: String,
    pub software: String,
    pub config_version: i64,
    pub last_seen: String,
    /// "version 5 applied", "version 6 rejected".
    pub latest: String,
    pub rejected_because: String,
    /// Why the node kept its old own settings, when it could not apply new ones.
    pub own_settings_refused: String,
}

impl NodeRow {
    fn of(view: &NodeView, now: &str) -> NodeRow {
        let node = &view.node;
        let state = match node.state {
            NodeState::Stopped => "stopped",
            NodeState::Running if seen_lately(&node.last_seen, now) => "running",
            NodeState::Running => "not seen",
        };
        let (latest, rejected_because) = match &view.latest {
            Some(o) => match &o.outcome {
                Outcome::Applied => (format!("version {} applied", o.version), String::new()),
                Outcome::Rejected(why) => (format!("version {} rejected", o.version), why.clone()),
            },
            None => (String::new(), String::new()),
        };
        NodeRow {
            name: node.name.clone(),
            state,
            http_listen: node.http_listen.clone(),
            icp_listen: node.icp_listen.clone().unwrap_or_default(),
            software: node.software.clone(),
            config_version: node.config_version,
            last_seen: when(&node.last_seen),
            latest,
            rejected_because,
            own_settings_refused: view.own_settings_refused.clone().unwrap_or_default(),
        }
    }
}

/// Whether `last_seen` is within three heartbeats of `now` (both RFC 3339, UTC, as the
/// nodes write them, so that they compare as seconds of the day when on the same day).
fn seen_lately(last_seen: &str, now: &str) -> bool {
    let seconds = |t: &str| -> Option<(String, i64)> {
        let (day, time) = t.split_once('T')?;
        let mut parts = time.get(..8)?.split(':').map(|p| p.parse::<i64>().ok());
        let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
        Some((day.to_owned(), h * 3600 + m * 60 + s))
    };
    match (seconds(last_seen), seconds(now)) {
        (Some((day, seen)), Some((today, now))) if day == today => {
            now - seen <= 3 * HEARTBEAT_S as i64
        }
        // Just after midnight, a node seen just before it.
        (Some((_, seen)), Some((_, now))) => now + 86_400 - seen <= 3 * HEARTBEAT_S as i64,
        _ => false,
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "nodes.html")]
pub struct NodesPage {
    chrome: Chrome,
    notice: Option<Notice>,
    /// The canary node, and since when, while one runs.
    canary: Option<(String, String)>,
    rows: Vec<NodeRow>,
    newest: i64,
}

const HERE: &str = "/monitor/nodes";

pub async fn list(State(state): State<AppState>, session: Session) -> Answer {
    let notice = state.landing.take(&session, HERE);
    let nodes = state.db.nodes().await.or_failed("reading the nodes")?;
    let canary = state.db.canary().await.or_failed("reading the canary")?;
    let newest = state
        .db
        .latest()
        .await
        .or_failed("reading the newest version")?
        .id;
    let now = now_rfc3339();
    Ok(NodesPage {
        chrome: Chrome::new(&session, "nodes"),
        notice,
        canary: canary.map(|(node, since)| (node, when(&since))),
        rows: nodes.iter().map(|n| NodeRow::of(n, &now)).collect(),
        newest,
    }
    .into_response())
}

/// Makes the node the form names the canary.
pub async fn canary(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<FormData>,
) -> Answer {
    if !csrf_ok(&session, &form) {
        return Err(auth::forbidden().into());
    }
    let node = form.get("node").unwrap_or_default().trim().to_owned();
    let notice = match state.db.start_canary(&node).await {
        Ok(()) => Notice {
            tone: "warn",
            text: format!(
                "{node} is the canary: the versions saved from now on go to it alone, until \
                 they are rolled out to every node."
            ),
        },
        Err(e) => Notice::error(format!("No canary: {e}.")),
    };
    Ok(see_other(&state, &session, HERE, notice))
}

/// Ends the canary: what was held for it goes to every node.
pub async fn roll_out(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<FormData>,
) -> Answer {
    if !csrf_ok(&session, &form) {
        return Err(auth::forbidden().into());
    }
    let notice = match state.db.roll_out().await {
        Ok(held) => Notice {
            tone: "ok",
            text: format!(
                "Rolled out: {held} version(s) held for the canary now go to every node."
            ),
        },
        Err(e) => Notice::error(format!("Not rolled out: {e}.")),
    };
    Ok(see_other(&state, &session, HERE, notice))
}

/// One of the settings a node holds apart, as its form shows it.
#[derive(Debug, Clone)]
pub struct OwnField {
    pub key: &'static str,
    pub help: &'static str,
    /// The node's own value; empty: it runs the fleet's.
    pub value: String,
    /// The fleet's value, in the version the node may apply.
    pub fleet: String,
    pub error: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "node.html")]
pub struct NodePage {
    chrome: Chrome,
    notice: Option<Notice>,
    row: NodeRow,
    fields: Vec<OwnField>,
}

fn node_address(name: &str) -> String {
    format!("{HERE}/{}", auth::percent_encode(name))
}

/// The node called `name`, or the 404 page.
async fn find_node(state: &AppState, session: &Session, name: &str) -> Result<NodeRow, Refusal> {
    let nodes = state.db.nodes().await.or_failed("reading the nodes")?;
    let now = now_rfc3339();
    match nodes.iter().find(|n| n.node.name == name) {
        Some(view) => Ok(NodeRow::of(view, &now)),
        None => {
            let text = format!("There is no node called {name:?} on this database.");
            Err(not_found(session, "nodes", text, (HERE, "See every node")).into())
        }
    }
}

/// The form's fields: `values` (the node's own, or what was posted) over the fleet's.
async fn own_fields(
    state: &AppState,
    name: &str,
    values: &BTreeMap<String, String>,
    errors: &BTreeMap<String, String>,
) -> Result<Vec<OwnField>, Refusal> {
    let fleet = state
        .db
        .latest_for(name)
        .await
        .or_failed("reading the version in force")?
        .config;
    Ok(PER_NODE
        .iter()
        .map(|key| OwnField {
            key,
            help: SETTINGS
                .iter()
                .find(|s| s.key == *key)
                .map_or("", |s| s.help),
            value: values.get(*key).cloned().unwrap_or_default(),
            fleet: fleet.get(key).unwrap_or_default(),
            error: errors.get(*key).cloned(),
        })
        .collect())
}

/// The node's page: its row and the form of its own settings.
pub async fn own_settings(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
) -> Answer {
    let notice = state.landing.take(&session, &node_address(&name));
    let row = find_node(&state, &session, &name).await?;
    let own = state
        .db
        .node_settings(&name)
        .await
        .or_failed("reading the node's settings")?;
    let values = own.into_iter().collect();
    let fields = own_fields(&state, &name, &values, &BTreeMap::new()).await?;
    Ok(NodePage {
        chrome: Chrome::new(&session, "nodes"),
        notice,
        row,
        fields,
    }
    .into_response())
}

/// Saves the node's own settings (an empty box: the fleet's value) and has the node apply
/// them now: told by PostgreSQL, or, on a lone Canopy's SQLite, asked to reload. A value
/// the config model refuses is shown under its box, and nothing is saved.
pub async fn set_own_settings(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    Form(form): Form<FormData>,
) -> Answer {
    if !csrf_ok(&session, &form) {
        return Err(auth::forbidden().into());
    }
    let row = find_node(&state, &session, &name).await?;
    let values: BTreeMap<String, String> = PER_NODE
        .iter()
        .map(|key| {
            let value = form.get(key).unwrap_or_default().trim().to_owned();
            ((*key).to_owned(), value)
        })
        .collect();
    let mut fleet = state
        .db
        .latest_for(&name)
        .await
        .or_failed("reading the version in force")?
        .config;
    let given = values.iter().filter(|(_, v)| !v.is_empty());
    if let Err(errors) = fleet.set_all(given.map(|(k, v)| (k.as_str(), v.as_str()))) {
        let mut by_key = BTreeMap::new();
        let mut others = Vec::new();
        for e in errors.0 {
            match PER_NODE.contains(&e.key.as_str()) {
                true => {
                    by_key.entry(e.key.clone()).or_insert(e.message);
                }
                false => others.push(e.to_string()),
            }
        }
        let notice = Notice::error(match others.is_empty() {
            true => "Nothing saved: see the settings marked below.".to_owned(),
            false => format!("Nothing saved: {}.", others.join("; ")),
        });
        let fields = own_fields(&state, &name, &values, &by_key).await?;
        let page = NodePage {
            chrome: Chrome::new(&session, "nodes"),
            notice: Some(notice),
            row,
            fields,
        };
        return Err(Refusal::with(StatusCode::UNPROCESSABLE_ENTITY, page));
    }
    let changes: Vec<(&str, Option<&str>)> = values
        .iter()
        .map(|(k, v)| (k.as_str(), Some(v.as_str()).filter(|v| !v.is_empty())))
        .collect();
    let notice = match state.db.set_node_settings(&name, &changes).await {
        Err(e) => Notice::error(format!("Nothing saved: {e}.")),
        Ok(()) if state.db.url().is_shared() => Notice {
            tone: "ok",
            text: format!(
                "Saved: {name} applies its own settings now, over the version in force; \
                 this page says so if it cannot."
            ),
        },
        Ok(()) => match proxy::reload(&state.control).await {
            Ok(_) => Notice {
                tone: "ok",
                text: format!("Saved and applied on {name}."),
            },
            Err(e) => Notice::error(format!(
                "Saved, but {name} did not apply its own settings: {e}."
            )),
        },
    };
    Ok(see_other(&state, &session, &node_address(&name), notice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_running_while_its_heartbeat_is_recent() {
        let now = "2026-11-29T06:00:20.000Z";
        assert!(seen_lately("2026-11-29T06:00:10.000Z", now));
        assert!(!seen_lately("2026-11-29T05:59:50.000Z", now));
        assert!(seen_lately(
            "2026-11-28T23:59:58.000Z",
            "2026-11-29T00:00:03.000Z"
        ));
        assert!(!seen_lately("2026-11-27T06:00:20.000Z", now));
    }
}
