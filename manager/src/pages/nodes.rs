//! The Nodes page: every proxy on this database (one for a lone Canopy, each node of a
//! fleet on a shared PostgreSQL), its state, the version in force, when it was last seen,
//! and its outcome for the newest version it tried.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Form;
use canopy_config::nodes::{NodeState, NodeView, Outcome, HEARTBEAT_S};
use canopy_config::versions::now_rfc3339;

use super::landing::see_other;
use super::{when, Answer, Chrome, Notice, OrFailed};
use crate::accounts::Session;
use crate::auth::{self, csrf_ok, FormData};
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
