//! The Clients page: the responder's side. Who asks this proxy (peers and child caches, by
//! address), what it answered their ICP queries, what it served them over HTTP, and who
//! was DENIED.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::IntoResponse;
use canopy_config::stats::ClientSnapshot;

use super::monitor::{live, why_down, Live};
use super::{bytes, when, Answer, Chrome};
use crate::accounts::Session;
use crate::state::AppState;

/// One client's row, its figures as the page shows them.
#[derive(Debug, Clone)]
pub struct ClientRow {
    /// The address, or "other" for the row that sums the clients no longer tracked.
    pub address: String,
    pub tracked: bool,
    pub peer: Option<String>,
    pub queries: u64,
    pub hit: u64,
    pub miss: u64,
    pub miss_nofetch: u64,
    pub denied: u64,
    pub err: u64,
    pub objects: u64,
    pub hits: u64,
    pub bytes: String,
    pub last_seen: String,
}

impl ClientRow {
    fn of(client: &ClientSnapshot) -> ClientRow {
        let answered = |opcode: &str| client.icp_answers.get(opcode).copied().unwrap_or(0);
        ClientRow {
            address: client
                .address
                .map_or_else(|| "other".to_owned(), |ip| ip.to_string()),
            tracked: client.address.is_some(),
            peer: client.peer.clone(),
            queries: client.icp_queries,
            hit: answered("HIT"),
            miss: answered("MISS"),
            miss_nofetch: answered("MISS_NOFETCH"),
            denied: answered("DENIED"),
            err: answered("ERR"),
            objects: client.objects,
            hits: client.hits,
            bytes: bytes(client.bytes),
            last_seen: client.last_seen_at.as_deref().map(when).unwrap_or_default(),
        }
    }

    /// The peer's name where the address is a configured peer's.
    pub fn peer_name(&self) -> &str {
        self.peer.as_deref().unwrap_or("")
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "clients.html")]
pub struct ClientsPage {
    chrome: Chrome,
    running: bool,
    down_reason: String,
    rows: Vec<ClientRow>,
    /// "127.0.0.3 (2), 10.1.1.1 (1)": the addresses answered DENIED, most denied first.
    denied: String,
}

pub async fn list(State(state): State<AppState>, session: Session) -> Answer {
    let Live { status, stats } = live(&state).await;
    let clients = stats.map(|s| s.clients).unwrap_or_default();
    let rows: Vec<ClientRow> = clients.iter().map(ClientRow::of).collect();
    Ok(ClientsPage {
        chrome: Chrome::new(&session, "clients"),
        running: status.is_ok(),
        down_reason: status.as_ref().err().map(why_down).unwrap_or_default(),
        denied: denied_list(&rows),
        rows,
    }
    .into_response())
}

fn denied_list(rows: &[ClientRow]) -> String {
    let mut denied: Vec<&ClientRow> = rows.iter().filter(|r| r.denied > 0).collect();
    denied.sort_by_key(|r| std::cmp::Reverse(r.denied));
    denied
        .iter()
        .map(|r| match r.tracked {
            true => format!("{} ({})", r.address, r.denied),
            false => format!("other addresses ({})", r.denied),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_the_snapshot_and_list_the_denied_most_first() {
        let snapshot = |address: Option<&str>, denied: u64| ClientSnapshot {
            address: address.map(|a| a.parse().unwrap()),
            icp_queries: denied + 1,
            icp_answers: [("DENIED".to_owned(), denied), ("HIT".to_owned(), 1)].into(),
            bytes: 2048,
            ..ClientSnapshot::default()
        };
        let rows: Vec<ClientRow> = [
            snapshot(Some("10.0.0.1"), 0),
            snapshot(Some("10.0.0.2"), 1),
            snapshot(None, 5),
        ]
        .iter()
        .map(ClientRow::of)
        .collect();
        assert_eq!((rows[0].hit, rows[0].miss, rows[0].queries), (1, 0, 1));
        assert_eq!(rows[0].bytes, "2.0 KiB");
        assert_eq!(rows[2].address, "other");
        assert_eq!(denied_list(&rows), "other addresses (5), 10.0.0.2 (1)");
    }
}
