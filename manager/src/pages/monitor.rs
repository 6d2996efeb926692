//! Monitor → Dashboard, Peers and each peer's page: the proxy's figures now (asked over the
//! control socket) and over the last hour (from the samples in SQLite).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Form;
use canopy_config::config::Config;
use canopy_config::control::{ControlError, StatusReply};
use canopy_config::maintenance::Maintenance;
use canopy_config::stats::{
    DigestSnapshot, DiskSnapshot, Failure, OwnDigestSnapshot, PeerSnapshot, PeerState,
    StatsSnapshot, StoreState, FALSE_HIT_METHODS,
};
use canopy_config::versions::ConfigVersion;
use serde::{Deserialize, Serialize};

use super::landing::see_other;
use super::{
    bytes, duration, not_found, percent, when, Answer, Chrome, Editing, Notice, OrFailed, Refusal,
};
use crate::accounts::{unix_now, Session};
use crate::auth::{self, csrf_ok, FormData};
use crate::charts::{Chart, Series};
use crate::proxy;
use crate::samples::{self, Sample, Scope, Window};
use crate::state::AppState;

/// The proxy as the console sees it right now.
pub struct Live {
    pub status: Result<StatusReply, ControlError>,
    pub stats: Option<StatsSnapshot>,
}

/// Why the proxy did not answer, in words that fit "The proxy is not running (…)".
pub(super) fn why_down(e: &ControlError) -> String {
    match e {
        ControlError::NotRunning(path) => format!("nothing listens on {}", path.display()),
        other => other.to_string(),
    }
}

pub async fn live(state: &AppState) -> Live {
    let status = proxy::status(&state.control).await;
    let stats = match status {
        Ok(_) => proxy::stats(&state.control).await.ok(),
        Err(_) => None,
    };
    Live { status, stats }
}

/// The kind shown for an entry of the parent list.
const HTTP_PARENT: &str = "HTTP parent";
/// The kind shown for a peer the proxy still counts that the config no longer has.
const NO_LONGER_CONFIGURED: &str = "no longer configured";

/// One peer's row: the configured peer joined with its counters.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRow {
    pub name: String,
    /// "parent", "sibling", "HTTP parent", or "no longer configured".
    pub kind: String,
    pub address: String,
    pub state: Option<PeerState>,
    pub state_since: Option<String>,
    pub icp_queries: u64,
    pub icp_hits: u64,
    pub icp_misses: u64,
    pub icp_other_replies: u64,
    pub icp_timeouts: u64,
    pub icp_late_replies: u64,
    pub icp_reply_ms_avg: f64,
    pub icp_reply_ms_recent: f64,
    pub last_query_at: Option<String>,
    pub last_reply_at: Option<String>,
    pub fetches: u64,
    pub hits_served: u64,
    pub false_hits: u64,
    /// Of the false hits, those of each prediction method, in `FALSE_HIT_METHODS`' order.
    pub false_hits_by_method: Vec<(&'static str, u64)>,
    /// ICP replies with the object inline, received from and sent to the peer.
    pub icp_hit_obj_received: u64,
    pub icp_hit_obj_sent: u64,
    pub bytes: u64,
    pub failures: u64,
    pub last_failure: Option<Failure>,
    /// Whether ICP queries go to this peer in the config.
    pub queried: bool,
    /// Taken out of use, after failures (an HTTP parent) or by hand (any peer).
    pub down: bool,
    pub down_since: Option<String>,
    pub down_reason: Option<String>,
    pub down_by_hand: bool,
    /// Who took it down by hand.
    pub down_by: Option<String>,
    pub htcp_queries: u64,
    pub htcp_hits: u64,
    pub htcp_misses: u64,
    pub htcp_timeouts: u64,
    pub false_hits_htcp: u64,
    /// Its cache digest, once fetched or tried.
    pub digest: Option<DigestSnapshot>,
    pub false_hits_digest: u64,
}

impl PeerRow {
    fn new(
        name: &str,
        kind: &str,
        address: String,
        s: Option<&PeerSnapshot>,
        queried: bool,
    ) -> PeerRow {
        let empty = PeerSnapshot::default();
        let s = s.unwrap_or(&empty);
        let reply = |op: &str| s.icp_replies.get(op).copied().unwrap_or_default();
        let hits = reply("HIT") + reply("HIT_OBJ");
        let misses = reply("MISS");
        PeerRow {
            name: name.to_owned(),
            kind: kind.to_owned(),
            address,
            state: s.state,
            state_since: s.state_since.clone(),
            icp_queries: s.icp_queries,
            icp_hits: hits,
            icp_misses: misses,
            icp_other_replies: s.icp_replies.values().sum::<u64>() - hits - misses,
            icp_timeouts: s.icp_timeouts,
            icp_late_replies: s.icp_late_replies,
            icp_reply_ms_avg: s.icp_reply_ms_avg,
            icp_reply_ms_recent: s.icp_reply_ms_recent,
            last_query_at: s.last_query_at.clone(),
            last_reply_at: s.last_reply_at.clone(),
            fetches: s.fetches,
            hits_served: s.hits_served,
            false_hits: s.false_hits,
            false_hits_by_method: s.false_hits_by_method().to_vec(),
            icp_hit_obj_received: s.icp_hit_obj_received,
            icp_hit_obj_sent: s.icp_hit_obj_sent,
            bytes: s.bytes,
            failures: s.failures,
            last_failure: s.last_failure.clone(),
            queried,
            down: s.health.down,
            down_since: s.health.down_since.clone(),
            down_reason: s.health.down_reason.clone(),
            down_by_hand: s.health.down_by_hand,
            down_by: s.health.down_by.clone(),
            htcp_queries: s.htcp_queries,
            htcp_hits: s.htcp_hits,
            htcp_misses: s.htcp_misses,
            htcp_timeouts: s.htcp_timeouts,
            false_hits_htcp: s.false_hits_htcp,
            digest: s.digest.clone(),
            false_hits_digest: s.false_hits_digest,
        }
    }

    /// Shows `record` (read from the database) on a row the proxy could not report on.
    fn taken_down(&mut self, record: &Maintenance) {
        self.down = true;
        self.down_by_hand = true;
        self.down_since = Some(record.at.clone());
        self.down_reason = Some(record.reason.clone());
        self.down_by = Some(record.by.clone());
    }

    /// Who took it down by hand and why, for the line under its status.
    pub fn down_detail(&self) -> String {
        match (self.down_by_hand, &self.down_by, &self.down_reason) {
            (true, Some(by), Some(reason)) => format!("by {by}: {reason}"),
            (true, Some(by), None) => format!("by {by}"),
            _ => String::new(),
        }
    }

    pub fn status_text(&self) -> String {
        let since = |t: &Option<String>| t.as_deref().map(|t| format!(" since {}", when(t)));
        if self.down {
            let since = since(&self.down_since).unwrap_or_default();
            return match (&self.down_reason, self.down_by_hand) {
                (_, true) => format!("down by hand{since}"),
                (Some(reason), false) => format!("down{since}: {reason}"),
                (None, false) => format!("down{since}"),
            };
        }
        match self.state {
            Some(PeerState::Up) => format!("up{}", since(&self.state_since).unwrap_or_default()),
            Some(PeerState::Dead) => {
                format!("dead{}", since(&self.state_since).unwrap_or_default())
            }
            None if self.kind == HTTP_PARENT => "up".to_owned(),
            None if !self.queried => "not queried".to_owned(),
            None => "no ICP reply yet".to_owned(),
        }
    }

    /// Whether it can be taken down by hand: the config in force has it.
    pub fn is_configured(&self) -> bool {
        self.kind != NO_LONGER_CONFIGURED
    }

    pub fn tone(&self) -> &'static str {
        match self.state {
            _ if self.down => "error",
            Some(PeerState::Up) => "ok",
            Some(PeerState::Dead) => "error",
            None if self.kind == HTTP_PARENT => "ok",
            None => "muted",
        }
    }

    /// `n` of one of its counters with the noun in the number it takes.
    pub fn counted(&self, n: &u64, one: &str, many: &str) -> String {
        counted(*n, one, many)
    }

    pub fn reply_text(&self) -> String {
        if self.icp_queries == 0 || self.icp_reply_ms_avg <= 0.0 {
            "—".to_owned()
        } else {
            format!("{:.1} ms", self.icp_reply_ms_avg)
        }
    }

    pub fn bytes_text(&self) -> String {
        bytes(self.bytes)
    }

    pub fn last_query_text(&self) -> String {
        self.last_query_at
            .as_deref()
            .map(when)
            .unwrap_or_else(|| "never".to_owned())
    }

    pub fn last_reply_text(&self) -> String {
        self.last_reply_at
            .as_deref()
            .map(when)
            .unwrap_or_else(|| "never".to_owned())
    }
}

/// `rows` with the peers the database says are down by hand marked so: the proxy said
/// nothing (it is not running), and they will be down when it starts.
fn with_maintenance(mut rows: Vec<PeerRow>, records: &[Maintenance]) -> Vec<PeerRow> {
    for row in &mut rows {
        if let Some(record) = records.iter().find(|m| m.name == row.name) {
            row.taken_down(record);
        }
    }
    rows
}

/// [`peer_rows`], from the database's records of peers down by hand when the proxy is not
/// running.
async fn rows_now(
    state: &AppState,
    config: &Config,
    stats: Option<&StatsSnapshot>,
) -> Result<Vec<PeerRow>, Refusal> {
    let rows = peer_rows(config, stats);
    if stats.is_some() {
        return Ok(rows);
    }
    let records = state
        .db
        .maintenance()
        .await
        .or_failed("reading the peers down by hand")?;
    Ok(with_maintenance(rows, &records))
}

/// Every configured peer and HTTP parent, then any other the proxy still counts.
pub fn peer_rows(config: &Config, stats: Option<&StatsSnapshot>) -> Vec<PeerRow> {
    let find = |name: &str| stats.and_then(|s| s.peers.iter().find(|p| p.name == name));
    let icp_on = config.icp_mode == canopy_config::config::IcpMode::SendReceive;
    let mut rows: Vec<PeerRow> = config
        .peers
        .iter()
        .map(|p| {
            PeerRow::new(
                &p.name,
                p.kind.as_str(),
                format!("{}:{} (ICP {})", p.host, p.http_port, p.icp_port),
                find(&p.name),
                icp_on && !p.no_query,
            )
        })
        .collect();
    let rule_parents = config.parent_rules.iter().flat_map(|r| r.parents.0.iter());
    for parent in config.parents.0.iter().chain(rule_parents) {
        // The proxy counts a parent under its address, whatever its weight.
        let name = parent.addr.to_string();
        if rows.iter().any(|r| r.name == name) {
            continue;
        }
        let address = parent.to_string();
        rows.push(PeerRow::new(
            &name,
            HTTP_PARENT,
            address,
            find(&name),
            false,
        ));
    }
    for p in stats.map(|s| s.peers.as_slice()).unwrap_or_default() {
        if !rows.iter().any(|r| r.name == p.name) {
            rows.push(PeerRow::new(
                &p.name,
                NO_LONGER_CONFIGURED,
                "—".into(),
                Some(p),
                false,
            ));
        }
    }
    rows
}

#[derive(Template, WebTemplate)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    chrome: Chrome,
    chart_scope: ChartScope,
    running: bool,
    down_reason: String,
    pid: String,
    uptime: String,
    http_listen: String,
    icp_listen: String,
    in_force: String,
    rejected: Option<(i64, String)>,
    newest: i64,
    newest_state: String,
    requests: u64,
    /// "1 hit · 3 misses".
    hits_and_misses: String,
    hit_ratio: String,
    byte_hit_ratio: String,
    bytes_from_cache: String,
    bytes_from_upstream: String,
    /// "3 queries sent".
    icp_sent: String,
    /// What peers replied to our queries and what we answered to theirs, as counts.
    icp_replies_received: String,
    icp_queries_answered: String,
    /// Answers this proxy gave to ICP queries, as `HIT 3 · MISS 5`.
    icp_answers: String,
    reloads_applied: u64,
    reloads_rejected: u64,
    peers_up: usize,
    peers_dead: usize,
    charts: Vec<String>,
    /// Failed console logins ever, so guessing is noticed.
    failed_logins: i64,
    /// The processes `canopy run` supervises, with their restarts; empty without it.
    processes: Vec<String>,
    memory_cache: TierCard,
    disk_cache: TierCard,
    /// This cache's own digest, as served to peers.
    own_digest: TierCard,
}

/// One tier of the cache on the dashboard: its headline figure (memory: its hit ratio;
/// disk: its state; the digest of both: its entries) and the lines under it.
pub struct TierCard {
    big: String,
    /// The headline's class: `ok`, `error`, or none.
    tone: &'static str,
    lines: Vec<String>,
}

impl TierCard {
    fn memory(s: &StatsSnapshot) -> TierCard {
        TierCard {
            big: percent(s.memory_hit_ratio),
            tone: "",
            lines: vec![
                format!("of requests · {}", counted(s.memory_hits, "hit", "hits")),
                format!(
                    "{} · {} of {}",
                    counted(s.objects, "object", "objects"),
                    bytes(s.bytes_held),
                    bytes(s.memory_capacity)
                ),
                counted(s.memory_evictions, "eviction", "evictions"),
            ],
        }
    }

    fn disk(disk: Option<&DiskSnapshot>) -> TierCard {
        let Some(d) = disk else {
            return TierCard {
                big: "Off".to_owned(),
                tone: "",
                lines: vec!["cache_dir or cache_dir_size is empty".to_owned()],
            };
        };
        let (big, tone) = match d.state {
            StoreState::Ok => ("OK", "ok"),
            StoreState::Faulted => ("Faulted", "error"),
            StoreState::Closed => ("Closed", "error"),
        };
        let mut lines = Vec::new();
        if let Some(why) = &d.closed {
            lines.push(format!("not opened at start: {why}"));
        }
        lines.extend([
            format!(
                "{} of requests · {}",
                percent(d.hit_ratio),
                counted(d.hits_served, "hit", "hits")
            ),
            format!(
                "{} · {} of {}",
                counted(d.objects, "object", "objects"),
                bytes(d.bytes),
                bytes(d.capacity)
            ),
            format!(
                "{} · {} · {}",
                counted(d.reads, "read", "reads"),
                counted(d.writes, "write", "writes"),
                counted(d.evictions, "eviction", "evictions")
            ),
            format!(
                "faults: full {} · I/O {} · corrupt {}",
                d.faults_full, d.faults_io, d.faults_corrupt
            ),
        ]);
        // Shown only when it happened: objects a restart will not have, or lookups that
        // went upstream because the disk was busy.
        if d.writes_dropped + d.skipped > 0 {
            lines.push(format!(
                "busy: {} not written · {} skipped",
                counted(d.writes_dropped, "object", "objects"),
                counted(d.skipped, "call", "calls")
            ));
        }
        if let Some(fault) = &d.last_fault {
            lines.push(format!("last fault {}: {}", when(&fault.at), fault.reason));
        }
        TierCard {
            big: big.to_owned(),
            tone,
            lines,
        }
    }

    /// This cache's digest: its entries, then its size and fill, its last build, and how
    /// often peers took it.
    fn own_digest(digest: Option<&OwnDigestSnapshot>) -> TierCard {
        let Some(d) = digest else {
            return TierCard {
                big: "None".to_owned(),
                tone: "",
                lines: vec!["digest_generation off, or not built yet".to_owned()],
            };
        };
        TierCard {
            big: counted(d.entries, "entry", "entries"),
            tone: "",
            lines: vec![
                format!(
                    "capacity {} · {} bits each · {}",
                    d.capacity,
                    d.bits_per_entry,
                    bytes(d.size)
                ),
                format!("{:.1}% of bits on", d.fill_percent),
                format!("built {} in {} ms", when(&d.built_at), d.build_ms),
                format!(
                    "served {} · not modified {}",
                    counted(d.served, "time", "times"),
                    d.not_modified
                ),
            ],
        }
    }
}

/// `n` with the noun in the number it takes: "1 hit", "2 hits".
fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The newest version (see `Db::latest`).
async fn newest(state: &AppState) -> Result<ConfigVersion, Refusal> {
    state.db.latest().await.or_failed("reading the config")
}

/// `?node=` of a page with charts: one node's samples, or (absent or empty) the fleet's.
#[derive(Debug, Default, Deserialize)]
pub struct ChartsOf {
    node: Option<String>,
}

/// The choice of node above a page's charts, offered when the database has more than one.
pub struct ChartScope {
    pub nodes: Vec<String>,
    /// The node shown; empty for the whole fleet.
    pub chosen: String,
}

async fn chart_scope(state: &AppState, of: &ChartsOf) -> Result<(Scope, ChartScope), Refusal> {
    let scope = Scope::from_query(of.node.as_deref());
    let nodes = state.db.nodes().await.or_failed("reading the nodes")?;
    let nodes = match nodes.len() {
        0 | 1 => Vec::new(),
        _ => nodes.into_iter().map(|n| n.node.name).collect(),
    };
    let chosen = scope.node().to_owned();
    Ok((scope, ChartScope { nodes, chosen }))
}

pub async fn dashboard(
    State(state): State<AppState>,
    session: Session,
    Query(of): Query<ChartsOf>,
) -> Answer {
    let newest = newest(&state).await?;
    let editing = Editing::load(&state, None).await?;
    let Live { status, stats } = live(&state).await;
    let stats_or_zero = stats.clone().unwrap_or_default();
    let s = &stats_or_zero;
    let window = Window::last_hour(unix_now());
    let (scope, chart_scope) = chart_scope(&state, &of).await?;
    let samples = samples::totals(&state.db, &scope, window.start())
        .await
        .or_failed("reading the stats samples")?;
    let failed_logins = crate::accounts::failed_login_total(&state.db)
        .await
        .or_failed("counting failed logins")?;
    let processes = state
        .control
        .parent()
        .and_then(canopy_config::supervision::State::read)
        .map(|s| s.processes.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    let mut page = DashboardPage {
        processes,
        chrome: Chrome::new(&session, "dashboard"),
        running: status.is_ok(),
        down_reason: status.as_ref().err().map(why_down).unwrap_or_default(),
        pid: String::new(),
        uptime: String::new(),
        http_listen: String::new(),
        icp_listen: String::new(),
        in_force: "—".to_owned(),
        rejected: editing
            .rejected
            .as_ref()
            .map(|v| (v.id, editing.reason().to_owned())),
        newest: newest.id,
        newest_state: newest.state.as_str().to_owned(),
        requests: s.requests,
        hits_and_misses: format!(
            "{} · {}",
            counted(
                s.hits_fresh + s.hits_stale + s.hits_revalidated,
                "hit",
                "hits"
            ),
            counted(s.misses, "miss", "misses")
        ),
        hit_ratio: percent(s.hit_ratio),
        byte_hit_ratio: percent(s.byte_hit_ratio),
        bytes_from_cache: bytes(s.bytes_from_cache),
        bytes_from_upstream: bytes(s.bytes_from_upstream),
        icp_sent: counted(
            s.peers.iter().map(|p| p.icp_queries).sum(),
            "query sent",
            "queries sent",
        ),
        icp_replies_received: counted(
            s.peers.iter().flat_map(|p| p.icp_replies.values()).sum(),
            "reply from peers",
            "replies from peers",
        ),
        icp_queries_answered: counted(
            s.icp_queries_received,
            "query from others answered",
            "queries from others answered",
        ),
        icp_answers: s
            .icp_answers
            .iter()
            .map(|(opcode, n)| format!("{opcode} {n}"))
            .collect::<Vec<_>>()
            .join(" · "),
        reloads_applied: s.reloads_applied,
        reloads_rejected: s.reloads_rejected,
        peers_up: s
            .peers
            .iter()
            .filter(|p| p.state == Some(PeerState::Up))
            .count(),
        peers_dead: s
            .peers
            .iter()
            .filter(|p| p.state == Some(PeerState::Dead))
            .count(),
        charts: dashboard_charts(&samples, window),
        chart_scope,
        failed_logins,
        memory_cache: TierCard::memory(s),
        disk_cache: TierCard::disk(s.disk.as_ref()),
        own_digest: TierCard::own_digest(s.own_digest.as_ref()),
    };
    if let Ok(status) = &status {
        page.pid = status.pid.to_string();
        page.uptime = duration(status.uptime_s);
        page.http_listen = status.http_listen.clone();
        page.icp_listen = status
            .icp_listen
            .clone()
            .unwrap_or_else(|| "off".to_owned());
        page.in_force = status.config_version.to_string();
    }
    Ok(page.into_response())
}

fn dashboard_charts(series: &[Vec<Sample>], window: Window) -> Vec<String> {
    let inc = samples::summed_buckets(series, window);
    let ratio = |part: usize, whole: &[usize]| -> Vec<Option<f64>> {
        inc.iter()
            .map(|b| {
                b.as_ref().and_then(|(_, d)| {
                    let total: f64 = whole.iter().map(|i| d[*i]).sum();
                    (total > 0.0).then(|| 100.0 * d[part] / total)
                })
            })
            .collect()
    };
    let rate = inc
        .iter()
        .map(|b| {
            b.as_ref()
                .and_then(|(secs, d)| (*secs > 0.0).then(|| d[0] / secs))
        })
        .collect();
    vec![
        Chart {
            title: "Hit ratio, last hour".into(),
            unit: "%",
            y_max: Some(100.0),
            window,
            series: vec![
                Series {
                    name: "by requests".into(),
                    points: ratio(1, &[0]),
                },
                Series {
                    name: "by bytes".into(),
                    points: ratio(3, &[3, 4]),
                },
            ],
        }
        .html(),
        Chart {
            title: "Requests per second, last hour".into(),
            unit: "",
            y_max: None,
            window,
            series: vec![Series {
                name: "requests/s".into(),
                points: rate,
            }],
        }
        .html(),
    ]
}

#[derive(Template, WebTemplate)]
#[template(path = "peers_monitor.html")]
pub struct PeersPage {
    chrome: Chrome,
    running: bool,
    down_reason: String,
    rows: Vec<PeerRow>,
}

impl PeersPage {
    /// The false-hit columns: one per prediction method.
    fn false_hit_methods(&self) -> &'static [&'static str] {
        &FALSE_HIT_METHODS
    }
}

pub async fn peers(State(state): State<AppState>, session: Session) -> Answer {
    let newest = newest(&state).await?;
    let Live { status, stats } = live(&state).await;
    Ok(PeersPage {
        chrome: Chrome::new(&session, "peers"),
        running: status.is_ok(),
        down_reason: status.as_ref().err().map(why_down).unwrap_or_default(),
        rows: rows_now(&state, &newest.config, stats.as_ref()).await?,
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "peer.html")]
pub struct PeerPage {
    chrome: Chrome,
    running: bool,
    row: PeerRow,
    charts: Vec<String>,
    chart_scope: ChartScope,
    failures: Vec<samples::FailureSeen>,
    notice: Option<Notice>,
}

pub async fn peer(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    Query(of): Query<ChartsOf>,
) -> Answer {
    let notice = state.landing.take(&session, &peer_address(&name));
    peer_page(&state, &session, &name, &of, notice).await
}

/// Peer `name`'s page.
fn peer_address(name: &str) -> String {
    format!("/monitor/peers/{}", auth::percent_encode(name))
}

/// Takes a peer or an HTTP parent down by hand, or brings it up, then shows its page.
pub async fn set_peer(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    Form(form): Form<FormData>,
) -> Answer {
    if !csrf_ok(&session, &form) {
        return Err(auth::forbidden().into());
    }
    let down = (form.get("action") == Some("down"))
        .then(|| form.get("reason").unwrap_or_default().trim().to_owned());
    let taking_down = down.is_some();
    let notice = match proxy::set_peer(&state.control, &name, down, &session.user).await {
        Ok(_) if taking_down => Notice {
            tone: "warn",
            text: format!(
                "{name} is down: it gets no requests and no ICP queries until it is brought up."
            ),
        },
        Ok(_) => Notice {
            tone: "ok",
            text: format!("{name} is up, back to the health checks."),
        },
        Err(e) => Notice::error(format!("The proxy did not change {name}: {e}.")),
    };
    Ok(see_other(&state, &session, &peer_address(&name), notice))
}

async fn peer_page(
    state: &AppState,
    session: &Session,
    name: &str,
    of: &ChartsOf,
    notice: Option<Notice>,
) -> Answer {
    let newest = newest(state).await?;
    let Live { status, stats } = live(state).await;
    let Some(row) = rows_now(state, &newest.config, stats.as_ref())
        .await?
        .into_iter()
        .find(|r| r.name == name)
    else {
        let text = format!("There is no peer called {name:?}.");
        return Err(not_found(session, "peers", text, ("/monitor/peers", "See every peer")).into());
    };
    let window = Window::last_hour(unix_now());
    let doing = "reading the peer's samples";
    let (scope, chart_scope) = chart_scope(state, of).await?;
    let samples = samples::peer(&state.db, &scope, name, window.start())
        .await
        .or_failed(doing)?;
    let mut failures = samples::recent_failures(&state.db, &scope, name, 10)
        .await
        .or_failed(doing)?;
    if let Some(last) = &row.last_failure {
        if !failures.iter().any(|f| f.at == last.at) {
            failures.insert(
                0,
                samples::FailureSeen {
                    at: last.at.clone(),
                    reason: last.reason.clone(),
                },
            );
        }
    }
    for f in &mut failures {
        f.at = when(&f.at);
    }
    Ok(PeerPage {
        chrome: Chrome::new(session, "peers"),
        running: status.is_ok(),
        row,
        charts: peer_charts(&samples, window),
        chart_scope,
        failures,
        notice,
    }
    .into_response())
}

fn peer_charts(series: &[Vec<Sample>], window: Window) -> Vec<String> {
    let inc = samples::summed_buckets(series, window);
    let col = |name: &str| {
        samples::PEER_COLUMNS
            .iter()
            .position(|c| *c == name)
            .unwrap_or(0)
    };
    let per_minute = |name: &str| -> Series {
        let i = col(name);
        Series {
            name: name.replace("icp_", "ICP ").replace('_', " "),
            points: inc.iter().map(|b| b.as_ref().map(|(_, d)| d[i])).collect(),
        }
    };
    vec![
        Chart {
            title: "ICP replies per minute".into(),
            unit: "",
            y_max: None,
            window,
            series: vec![
                per_minute("icp_hits"),
                per_minute("icp_misses"),
                per_minute("icp_other_replies"),
                per_minute("icp_timeouts"),
            ],
        }
        .html(),
        Chart {
            title: "ICP reply time".into(),
            unit: " ms",
            y_max: None,
            window,
            series: vec![Series {
                name: "reply time".into(),
                points: samples::means_over(series, col("icp_reply_ms"), window),
            }],
        }
        .html(),
        Chart {
            title: "HTTP through this peer, per minute".into(),
            unit: "",
            y_max: None,
            window,
            series: vec![
                per_minute("fetches"),
                per_minute("hits_served"),
                per_minute("false_hits"),
                per_minute("failures"),
            ],
        }
        .html(),
    ]
}

#[cfg(test)]
mod tests {
    use super::counted;

    #[test]
    fn counts_take_the_noun_in_their_number() {
        assert_eq!(counted(1, "hit", "hits"), "1 hit");
        assert_eq!(counted(0, "hit", "hits"), "0 hits");
        assert_eq!(counted(2, "peer", "peers"), "2 peers");
    }
}
