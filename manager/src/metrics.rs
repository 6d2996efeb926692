//! `/metrics`: the proxy's counters in the Prometheus text format (version 0.0.4), per peer
//! labelled, so existing dashboards can scrape them.
//!
//! Rendered by hand rather than through `metrics-exporter-prometheus`: that exporter
//! publishes what a process records into its own global recorder, while the console relays
//! a snapshot fetched from another process on each scrape. Writing the snapshot out
//! directly keeps every value exactly the proxy's, adds no global state, and drops a peer
//! the moment the proxy stops reporting it.
//!
//! A scraper cannot log in with a form, so besides the console's session this endpoint
//! takes HTTP Basic credentials of a console account. They go through the console's
//! [`LoginLimits`](crate::login_limits::LoginLimits), which remembers good ones for a
//! minute: a scrape every few seconds costs one password check a minute.

use std::fmt::Write;
use std::net::IpAddr;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use canopy_config::control::StatusReply;
use canopy_config::stats::{PeerState, StatsSnapshot, StoreState};

use crate::auth::{cookie, ClientAddress, SESSION_COOKIE};
use crate::login_limits::{Checked, Refusal};
use crate::state::AppState;
use crate::{accounts, proxy};

pub async fn render(
    State(state): State<AppState>,
    ClientAddress(from): ClientAddress,
    headers: HeaderMap,
) -> Response {
    match authorized(&state, from, &headers).await {
        Ok(Access::Granted) => {}
        Ok(Access::Denied) => {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"canopy\"")],
                "log in: a console session, or HTTP Basic with a console account\n",
            )
                .into_response()
        }
        Ok(Access::Refused(refusal)) => {
            return (
                refusal.status(),
                [(header::RETRY_AFTER, refusal.retry_after())],
                format!("{refusal}\n"),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!("checking /metrics credentials: {e:#}");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    }
    let status = proxy::status(&state.control).await.ok();
    let stats = proxy::stats(&state.control).await.ok();
    let failed_logins = accounts::failed_login_total(&state.db)
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        exposition(status.as_ref(), stats.as_ref(), failed_logins),
    )
        .into_response()
}

/// Whether a scrape may see the figures.
enum Access {
    Granted,
    Denied,
    /// Its credentials were not even checked.
    Refused(Refusal),
}

async fn authorized(state: &AppState, from: IpAddr, headers: &HeaderMap) -> anyhow::Result<Access> {
    if let Some(id) = cookie(headers, SESSION_COOKIE) {
        if accounts::find_session(&state.db, id).await?.is_some() {
            return Ok(Access::Granted);
        }
    }
    let Some((user, password)) = basic_credentials(headers) else {
        return Ok(Access::Denied);
    };
    match state
        .login_limits
        .check_scrape(&state.db, from, &user, &password)
        .await?
    {
        Checked::Good => Ok(Access::Granted),
        Checked::Refused(refusal) => Ok(Access::Refused(refusal)),
        Checked::Wrong => {
            accounts::record_failed_login(&state.db, &user).await?;
            tokio::time::sleep(state.login_delay).await;
            Ok(Access::Denied)
        }
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn value(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", parts.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.value(name, &[], value);
    }
}

/// The whole exposition; without a snapshot only `canopy_up 0` and the console's own.
pub fn exposition(
    status: Option<&StatusReply>,
    stats: Option<&StatsSnapshot>,
    failed_logins: i64,
) -> String {
    let mut out = Out(String::new());
    out.one(
        "canopy_up",
        "gauge",
        "Whether the proxy answered the console (1) or not (0).",
        if status.is_some() { 1.0 } else { 0.0 },
    );
    out.one(
        "canopy_console_failed_logins_total",
        "counter",
        "Failed logins to the console.",
        failed_logins as f64,
    );
    if let Some(status) = status {
        out.one(
            "canopy_uptime_seconds",
            "gauge",
            "Seconds since the proxy started.",
            status.uptime_s as f64,
        );
        out.one(
            "canopy_config_version",
            "gauge",
            "The config version in force.",
            status.config_version as f64,
        );
    }
    if let Some(stats) = stats {
        totals(&mut out, stats);
        peers(&mut out, stats);
        peer_digests(&mut out, stats);
        own_digest(&mut out, stats);
        clients(&mut out, stats);
    }
    out.0
}

fn totals(out: &mut Out, s: &StatsSnapshot) {
    out.one(
        "canopy_requests_total",
        "counter",
        "Client requests.",
        s.requests as f64,
    );
    out.family(
        "canopy_hits_total",
        "counter",
        "Requests served from the cache.",
    );
    out.value(
        "canopy_hits_total",
        &[("kind", "fresh")],
        s.hits_fresh as f64,
    );
    out.value(
        "canopy_hits_total",
        &[("kind", "stale")],
        s.hits_stale as f64,
    );
    out.value(
        "canopy_hits_total",
        &[("kind", "revalidated")],
        s.hits_revalidated as f64,
    );
    out.one(
        "canopy_misses_total",
        "counter",
        "Cache misses.",
        s.misses as f64,
    );
    out.one(
        "canopy_uncacheable_total",
        "counter",
        "Requests that could not be cached.",
        s.uncacheable as f64,
    );
    out.family(
        "canopy_bytes_total",
        "counter",
        "Response bytes sent to clients, by source.",
    );
    out.value(
        "canopy_bytes_total",
        &[("source", "cache")],
        s.bytes_from_cache as f64,
    );
    out.value(
        "canopy_bytes_total",
        &[("source", "upstream")],
        s.bytes_from_upstream as f64,
    );
    out.one(
        "canopy_hit_ratio",
        "gauge",
        "Hits per request since start.",
        s.hit_ratio,
    );
    out.one(
        "canopy_byte_hit_ratio",
        "gauge",
        "Bytes from the cache per byte sent since start.",
        s.byte_hit_ratio,
    );
    out.one(
        "canopy_cache_objects",
        "gauge",
        "Objects in the cache.",
        s.objects as f64,
    );
    out.one(
        "canopy_cache_bytes",
        "gauge",
        "Bytes held in the cache.",
        s.bytes_held as f64,
    );
    disk_metrics(out, s);
    out.one(
        "canopy_denied_clients_total",
        "counter",
        "Requests refused by access control.",
        s.denied_clients as f64,
    );
    out.one(
        "canopy_denied_destinations_total",
        "counter",
        "Requests refused for where they were going (safe_ports, ssl_ports, the proxy itself, deny_to_localhost).",
        s.denied_destinations as f64,
    );
    out.one(
        "canopy_tunnels_total",
        "counter",
        "CONNECT tunnels.",
        s.tunnels as f64,
    );
    out.one(
        "canopy_purges_total",
        "counter",
        "PURGE requests answered (200, 404 or 403).",
        s.purges as f64,
    );
    out.one(
        "canopy_retries_total",
        "counter",
        "Requests sent on to another hop after one failed.",
        s.retries as f64,
    );
    out.one(
        "canopy_errors_total",
        "counter",
        "Requests that ended in an error.",
        s.errors as f64,
    );
    out.family(
        "canopy_timeouts_total",
        "counter",
        "Timeouts that fired, by kind.",
    );
    for (kind, n) in &s.timeouts {
        out.value("canopy_timeouts_total", &[("kind", kind)], *n as f64);
    }
    out.family(
        "canopy_reloads_total",
        "counter",
        "Config reloads, by outcome.",
    );
    out.value(
        "canopy_reloads_total",
        &[("outcome", "applied")],
        s.reloads_applied as f64,
    );
    out.value(
        "canopy_reloads_total",
        &[("outcome", "rejected")],
        s.reloads_rejected as f64,
    );
    out.one(
        "canopy_icp_queries_received_total",
        "counter",
        "ICP queries received from peers and children.",
        s.icp_queries_received as f64,
    );
    out.family(
        "canopy_icp_answers_total",
        "counter",
        "ICP answers given, by opcode.",
    );
    for (opcode, n) in &s.icp_answers {
        out.value("canopy_icp_answers_total", &[("opcode", opcode)], *n as f64);
    }
    let h = &s.htcp;
    out.family(
        "canopy_htcp_answers_total",
        "counter",
        "HTCP TST queries answered, by answer.",
    );
    for (answer, n) in [("HIT", h.answered_hit), ("MISS", h.answered_miss)] {
        out.value("canopy_htcp_answers_total", &[("answer", answer)], n as f64);
    }
    for (name, help, n) in [
        (
            "canopy_htcp_clr_received_total",
            "HTCP CLRs received.",
            h.clr_received,
        ),
        (
            "canopy_htcp_clr_purged_total",
            "HTCP CLRs received that removed an object.",
            h.clr_purged,
        ),
        (
            "canopy_htcp_denied_total",
            "HTCP TSTs and CLRs refused by htcp_access or htcp_clr_access.",
            h.denied,
        ),
        (
            "canopy_htcp_dropped_total",
            "HTCP datagrams not understood or not served.",
            h.dropped,
        ),
        (
            "canopy_htcp_clr_sent_total",
            "HTCP CLRs sent to peers, on PURGE and on invalidation.",
            h.clr_sent,
        ),
        (
            "canopy_htcp_clr_forwarded_total",
            "HTCP CLRs received and passed on to forward_clr peers.",
            h.clr_forwarded,
        ),
    ] {
        out.one(name, "counter", help, n as f64);
    }
}

/// The cache's tiers: hits by tier, and the disk tier's size, I/O and faults when it is on.
fn disk_metrics(out: &mut Out, s: &StatsSnapshot) {
    out.family("canopy_cache_hits_total", "counter", "Cache hits, by tier.");
    out.value(
        "canopy_cache_hits_total",
        &[("tier", "memory")],
        s.memory_hits as f64,
    );
    if let Some(d) = &s.disk {
        out.value(
            "canopy_cache_hits_total",
            &[("tier", "disk")],
            d.hits_served as f64,
        );
    }
    out.family(
        "canopy_cache_hit_ratio",
        "gauge",
        "Hits per request since start, by tier (canopy_hit_ratio is their sum).",
    );
    out.value(
        "canopy_cache_hit_ratio",
        &[("tier", "memory")],
        s.memory_hit_ratio,
    );
    if let Some(d) = &s.disk {
        out.value("canopy_cache_hit_ratio", &[("tier", "disk")], d.hit_ratio);
    }
    out.one(
        "canopy_cache_capacity_bytes",
        "gauge",
        "The memory cache's bound in bytes (cache_mem).",
        s.memory_capacity as f64,
    );
    out.one(
        "canopy_cache_evictions_total",
        "counter",
        "Objects evicted from the memory cache.",
        s.memory_evictions as f64,
    );
    let Some(d) = &s.disk else {
        return;
    };
    out.family(
        "canopy_disk_cache_state",
        "gauge",
        "The disk cache's state: 1 for the one it is in (faulted: a fault in the last 5 minutes; closed: it could not be opened).",
    );
    for state in [StoreState::Ok, StoreState::Faulted, StoreState::Closed] {
        out.value(
            "canopy_disk_cache_state",
            &[("state", state.as_str())],
            if d.state == state { 1.0 } else { 0.0 },
        );
    }
    let (gauge, counter) = ("gauge", "counter");
    let figures = [
        (
            "canopy_disk_cache_objects",
            gauge,
            "Objects in the disk cache.",
            d.objects,
        ),
        (
            "canopy_disk_cache_bytes",
            gauge,
            "Bytes held in the disk cache.",
            d.bytes,
        ),
        (
            "canopy_disk_cache_capacity_bytes",
            gauge,
            "The disk cache's bound in bytes.",
            d.capacity,
        ),
        (
            "canopy_disk_cache_reads_total",
            counter,
            "Bodies read from the disk cache.",
            d.reads,
        ),
        (
            "canopy_disk_cache_writes_total",
            counter,
            "Objects written to the disk cache.",
            d.writes,
        ),
        (
            "canopy_disk_cache_evictions_total",
            counter,
            "Objects evicted from the disk cache.",
            d.evictions,
        ),
        (
            "canopy_disk_cache_skipped_total",
            counter,
            "Disk cache lookups and reads skipped because its queue was full.",
            d.skipped,
        ),
        (
            "canopy_disk_cache_writes_dropped_total",
            counter,
            "Objects not written to the disk cache because too many writes were under way.",
            d.writes_dropped,
        ),
    ];
    for (name, kind, help, value) in figures {
        out.one(name, kind, help, value as f64);
    }
    out.family(
        "canopy_disk_cache_faults_total",
        "counter",
        "Disk cache faults, by kind; each was served from memory or upstream instead.",
    );
    for (kind, value) in [
        ("full", d.faults_full),
        ("io", d.faults_io),
        ("corrupt", d.faults_corrupt),
    ] {
        out.value(
            "canopy_disk_cache_faults_total",
            &[("kind", kind)],
            value as f64,
        );
    }
}

/// Each peer's cache digest as last fetched, and the false hits its predictions led to.
fn peer_digests(out: &mut Out, s: &StatsSnapshot) {
    out.family(
        "canopy_peer_digest_false_hits_total",
        "counter",
        "Misses the peer's cache digest said it held and that it could not serve.",
    );
    for p in &s.peers {
        out.value(
            "canopy_peer_digest_false_hits_total",
            &[("peer", &p.name)],
            p.false_hits_digest as f64,
        );
    }
    type Field = fn(&canopy_config::stats::DigestSnapshot) -> f64;
    let figures: [(&str, &str, &str, Field); 8] = [
        (
            "canopy_peer_digest_bytes",
            "gauge",
            "Size of the peer's cache digest held (0 after a failed fetch).",
            |d| d.size as f64,
        ),
        (
            "canopy_peer_digest_entries",
            "gauge",
            "Objects the peer's cache digest says it holds.",
            |d| d.entries as f64,
        ),
        (
            "canopy_peer_digest_fill_ratio",
            "gauge",
            "Share of the digest's bits that are on (Squid refuses more than 0.65).",
            |d| d.fill_percent / 100.0,
        ),
        (
            "canopy_peer_digest_age_seconds",
            "gauge",
            "Time since the peer's digest held was fetched.",
            |d| d.age_s.unwrap_or_default() as f64,
        ),
        (
            "canopy_peer_digest_fetches_total",
            "counter",
            "Fetches of the peer's cache digest.",
            |d| d.fetches as f64,
        ),
        (
            "canopy_peer_digest_not_modified_total",
            "counter",
            "Fetches of the peer's cache digest answered 304 Not Modified, the digest held kept.",
            |d| d.not_modified as f64,
        ),
        (
            "canopy_peer_digest_fetch_failures_total",
            "counter",
            "Fetches of the peer's cache digest that failed or were refused.",
            |d| d.fetch_failures as f64,
        ),
        (
            "canopy_peer_digest_last_fetch_ok",
            "gauge",
            "Whether the last fetch of the peer's cache digest gave a usable digest (1).",
            |d| f64::from(u8::from(d.last_fetch_outcome == "ok")),
        ),
    ];
    for (name, kind, help, field) in figures {
        out.family(name, kind, help);
        for p in &s.peers {
            if let Some(d) = &p.digest {
                out.value(name, &[("peer", &p.name)], field(d));
            }
        }
    }
}

/// This proxy's own cache digest, while there is one.
fn own_digest(out: &mut Out, s: &StatsSnapshot) {
    let Some(d) = &s.own_digest else {
        return;
    };
    let (gauge, counter) = ("gauge", "counter");
    let figures = [
        (
            "canopy_digest_entries",
            gauge,
            "URLs in this cache's digest at its last build.",
            d.entries as f64,
        ),
        (
            "canopy_digest_capacity",
            gauge,
            "Entries this cache's digest is sized for.",
            d.capacity as f64,
        ),
        (
            "canopy_digest_bits_per_entry",
            gauge,
            "Bits of this cache's digest for each entry (digest_bits_per_entry).",
            f64::from(d.bits_per_entry),
        ),
        (
            "canopy_digest_bytes",
            gauge,
            "Size of this cache's digest as served, header included.",
            d.size as f64,
        ),
        (
            "canopy_digest_fill_ratio",
            gauge,
            "Share of this cache's digest's bits that are on (peers refuse more than 0.65).",
            d.fill_percent / 100.0,
        ),
        (
            "canopy_digest_age_seconds",
            gauge,
            "Time since this cache's digest was last built.",
            d.age_s as f64,
        ),
        (
            "canopy_digest_build_seconds",
            gauge,
            "How long the last build of this cache's digest took.",
            d.build_ms as f64 / 1000.0,
        ),
    ];
    for (name, kind, help, value) in figures {
        out.one(name, kind, help, value);
    }
    out.family(
        "canopy_digest_served_total",
        counter,
        "Requests for this cache's digest, by answer: sent whole, or 304 Not Modified.",
    );
    for (answer, n) in [("whole", d.served), ("not_modified", d.not_modified)] {
        out.value(
            "canopy_digest_served_total",
            &[("answer", answer)],
            n as f64,
        );
    }
}

fn peers(out: &mut Out, s: &StatsSnapshot) {
    type Field = fn(&canopy_config::stats::PeerSnapshot) -> f64;
    let counters: [(&str, &str, Field); 13] = [
        (
            "canopy_peer_fetches_total",
            "HTTP requests sent through the peer.",
            |p| p.fetches as f64,
        ),
        (
            "canopy_peer_failures_total",
            "Connect and fetch failures.",
            |p| p.failures as f64,
        ),
        (
            "canopy_peer_bytes_total",
            "Bytes received through the peer.",
            |p| p.bytes as f64,
        ),
        (
            "canopy_peer_icp_queries_total",
            "ICP queries sent to the peer.",
            |p| p.icp_queries as f64,
        ),
        (
            "canopy_peer_icp_timeouts_total",
            "ICP queries the peer did not answer in time.",
            |p| p.icp_timeouts as f64,
        ),
        (
            "canopy_peer_icp_late_replies_total",
            "ICP replies that came late or were ignored.",
            |p| p.icp_late_replies as f64,
        ),
        (
            "canopy_peer_icp_hit_obj_sent_total",
            "ICP HIT_OBJ replies (an object inline) sent to the peer.",
            |p| p.icp_hit_obj_sent as f64,
        ),
        (
            "canopy_peer_icp_hit_obj_received_total",
            "ICP HIT_OBJ replies (an object inline) received from the peer and used or not.",
            |p| p.icp_hit_obj_received as f64,
        ),
        (
            "canopy_peer_hits_served_total",
            "Cache hits the peer served us.",
            |p| p.hits_served as f64,
        ),
        (
            "canopy_peer_htcp_queries_total",
            "HTCP TST queries sent to the peer.",
            |p| p.htcp_queries as f64,
        ),
        (
            "canopy_peer_htcp_hits_total",
            "HTCP TST replies from the peer that said HIT.",
            |p| p.htcp_hits as f64,
        ),
        (
            "canopy_peer_htcp_misses_total",
            "HTCP TST replies from the peer that said MISS.",
            |p| p.htcp_misses as f64,
        ),
        (
            "canopy_peer_htcp_timeouts_total",
            "HTCP TST queries the peer did not answer in time.",
            |p| p.htcp_timeouts as f64,
        ),
    ];
    for (name, help, field) in counters {
        out.family(name, "counter", help);
        for p in &s.peers {
            out.value(name, &[("peer", &p.name)], field(p));
        }
    }
    out.family(
        "canopy_peer_icp_replies_total",
        "counter",
        "ICP replies from the peer, by opcode.",
    );
    for p in &s.peers {
        for (opcode, n) in &p.icp_replies {
            out.value(
                "canopy_peer_icp_replies_total",
                &[("peer", &p.name), ("opcode", opcode)],
                *n as f64,
            );
        }
    }
    out.family(
        "canopy_peer_false_hits_total",
        "counter",
        "Hits predicted at the peer that turned out to be misses, by the method that predicted them.",
    );
    for p in &s.peers {
        for (method, n) in p.false_hits_by_method() {
            out.value(
                "canopy_peer_false_hits_total",
                &[("peer", &p.name), ("method", method)],
                n as f64,
            );
        }
    }
    out.family(
        "canopy_peer_icp_reply_seconds",
        "gauge",
        "ICP reply time of the peer: average since start, and recent.",
    );
    for p in s.peers.iter().filter(|p| p.icp_queries > 0) {
        out.value(
            "canopy_peer_icp_reply_seconds",
            &[("peer", &p.name), ("window", "average")],
            p.icp_reply_ms_avg / 1000.0,
        );
        out.value(
            "canopy_peer_icp_reply_seconds",
            &[("peer", &p.name), ("window", "recent")],
            p.icp_reply_ms_recent / 1000.0,
        );
    }
    out.family(
        "canopy_peer_down",
        "gauge",
        "Whether the peer or HTTP parent is out of use (1), after failures or by hand.",
    );
    for p in &s.peers {
        out.value(
            "canopy_peer_down",
            &[("peer", &p.name)],
            if p.health.down { 1.0 } else { 0.0 },
        );
    }
    out.family(
        "canopy_peer_maintenance_info",
        "gauge",
        "A peer or HTTP parent taken down by hand: by whom, since when and why (1 while down).",
    );
    for p in s.peers.iter().filter(|p| p.health.down_by_hand) {
        let text = |t: &Option<String>| t.clone().unwrap_or_default();
        out.value(
            "canopy_peer_maintenance_info",
            &[
                ("peer", &p.name),
                ("by", &text(&p.health.down_by)),
                ("since", &text(&p.health.down_since)),
                ("reason", &text(&p.health.down_reason)),
            ],
            1.0,
        );
    }
    out.family(
        "canopy_peer_up",
        "gauge",
        "Whether the peer answers ICP (1) or is dead (0).",
    );
    for p in &s.peers {
        if let Some(state) = p.state {
            out.value(
                "canopy_peer_up",
                &[("peer", &p.name)],
                if state == PeerState::Up { 1.0 } else { 0.0 },
            );
        }
    }
}

/// The responder's side, labelled by client address; `other` sums the clients the proxy's
/// bounded table no longer holds one by one, so the series stay few.
fn clients(out: &mut Out, s: &StatsSnapshot) {
    let addresses: Vec<String> = s
        .clients
        .iter()
        .map(|c| {
            c.address
                .map_or_else(|| "other".to_owned(), |ip| ip.to_string())
        })
        .collect();
    out.family(
        "canopy_client_icp_answers_total",
        "counter",
        "ICP answers given to the client, by opcode.",
    );
    for (c, address) in s.clients.iter().zip(&addresses) {
        for (opcode, n) in &c.icp_answers {
            out.value(
                "canopy_client_icp_answers_total",
                &[("client", address), ("opcode", opcode)],
                *n as f64,
            );
        }
    }
    type Field = fn(&canopy_config::stats::ClientSnapshot) -> f64;
    let counters: [(&str, &str, Field); 3] = [
        (
            "canopy_client_objects_total",
            "HTTP responses sent to the peer or ICP client.",
            |c| c.objects as f64,
        ),
        (
            "canopy_client_hits_total",
            "Of those responses, the ones served from the cache.",
            |c| c.hits as f64,
        ),
        (
            "canopy_client_bytes_total",
            "Body bytes sent to the peer or ICP client.",
            |c| c.bytes as f64,
        ),
    ];
    for (name, help, field) in counters {
        out.family(name, "counter", help);
        for (c, address) in s.clients.iter().zip(&addresses) {
            out.value(name, &[("client", address)], field(c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_config::stats::{
        ClientSnapshot, DigestSnapshot, DiskSnapshot, OwnDigestSnapshot, PeerSnapshot,
    };

    #[test]
    fn each_tier_has_its_hits_and_ratio_and_the_disk_its_state() {
        let stats = StatsSnapshot {
            requests: 4,
            memory_hits: 1,
            memory_hit_ratio: 0.25,
            memory_capacity: 1024,
            disk: Some(DiskSnapshot {
                hits_served: 2,
                hit_ratio: 0.5,
                state: StoreState::Faulted,
                ..DiskSnapshot::default()
            }),
            ..StatsSnapshot::default()
        };
        let text = exposition(None, Some(&stats), 0);
        for line in [
            "canopy_cache_hits_total{tier=\"memory\"} 1\n",
            "canopy_cache_hits_total{tier=\"disk\"} 2\n",
            "canopy_cache_hit_ratio{tier=\"memory\"} 0.25\n",
            "canopy_cache_hit_ratio{tier=\"disk\"} 0.5\n",
            "canopy_cache_capacity_bytes 1024\n",
            "canopy_disk_cache_state{state=\"ok\"} 0\n",
            "canopy_disk_cache_state{state=\"faulted\"} 1\n",
            "canopy_disk_cache_state{state=\"closed\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn peers_are_labelled_and_labels_escaped() {
        let stats = StatsSnapshot {
            requests: 7,
            purges: 4,
            peers: vec![PeerSnapshot {
                name: "we\"ird\\peer".into(),
                icp_queries: 3,
                icp_replies: [("HIT".to_owned(), 2)].into_iter().collect(),
                state: Some(PeerState::Dead),
                ..PeerSnapshot::default()
            }],
            clients: vec![
                ClientSnapshot {
                    address: Some("127.0.0.2".parse().unwrap()),
                    icp_answers: [("DENIED".to_owned(), 5)].into(),
                    ..ClientSnapshot::default()
                },
                ClientSnapshot {
                    bytes: 9,
                    ..ClientSnapshot::default()
                },
            ],
            ..StatsSnapshot::default()
        };
        let text = exposition(None, Some(&stats), 2);
        assert!(text.contains("canopy_up 0\n"));
        assert!(text.contains("canopy_requests_total 7\n"));
        assert!(text.contains("canopy_purges_total 4\n"));
        assert!(text.contains(
            "canopy_peer_icp_replies_total{peer=\"we\\\"ird\\\\peer\",opcode=\"HIT\"} 2\n"
        ));
        assert!(text.contains("canopy_peer_up{peer=\"we\\\"ird\\\\peer\"} 0\n"));
        assert!(text.contains("canopy_console_failed_logins_total 2\n"));
        assert!(text.contains(
            "canopy_client_icp_answers_total{client=\"127.0.0.2\",opcode=\"DENIED\"} 5\n"
        ));
        assert!(text.contains("canopy_client_bytes_total{client=\"other\"} 9\n"));
        assert!(
            !text.contains("canopy_disk_cache_state"),
            "the disk tier is off"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn a_peers_digest_is_shown_once_fetched() {
        let digest = DigestSnapshot {
            size: 1_000,
            entries: 40,
            fill_percent: 25.0,
            last_fetch_outcome: "ok".into(),
            fetches: 2,
            ..DigestSnapshot::default()
        };
        let stats = StatsSnapshot {
            peers: vec![
                PeerSnapshot {
                    name: "east".into(),
                    false_hits_digest: 3,
                    digest: Some(digest),
                    ..PeerSnapshot::default()
                },
                PeerSnapshot {
                    name: "west".into(),
                    ..PeerSnapshot::default()
                },
            ],
            ..StatsSnapshot::default()
        };
        let text = exposition(None, Some(&stats), 0);
        for line in [
            "canopy_peer_digest_false_hits_total{peer=\"east\"} 3\n",
            "canopy_peer_digest_false_hits_total{peer=\"west\"} 0\n",
            "canopy_peer_digest_entries{peer=\"east\"} 40\n",
            "canopy_peer_digest_fill_ratio{peer=\"east\"} 0.25\n",
            "canopy_peer_digest_last_fetch_ok{peer=\"east\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("canopy_peer_digest_entries{peer=\"west\"}"));
    }

    #[test]
    fn this_caches_digest_is_shown_while_there_is_one() {
        let none = exposition(None, Some(&StatsSnapshot::default()), 0);
        assert!(!none.contains("canopy_digest_"), "{none}");
        let stats = StatsSnapshot {
            own_digest: Some(OwnDigestSnapshot {
                entries: 12,
                capacity: 400,
                bits_per_entry: 5,
                size: 378,
                fill_percent: 12.5,
                build_ms: 250,
                served: 3,
                not_modified: 2,
                ..OwnDigestSnapshot::default()
            }),
            ..StatsSnapshot::default()
        };
        let text = exposition(None, Some(&stats), 0);
        for line in [
            "canopy_digest_entries 12\n",
            "canopy_digest_capacity 400\n",
            "canopy_digest_bits_per_entry 5\n",
            "canopy_digest_bytes 378\n",
            "canopy_digest_fill_ratio 0.125\n",
            "canopy_digest_build_seconds 0.25\n",
            "canopy_digest_served_total{answer=\"whole\"} 3\n",
            "canopy_digest_served_total{answer=\"not_modified\"} 2\n",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
