//! Which names the console answers to, and which pages may post to it.
//!
//! A page on another site can point its own DNS name at the console's address (DNS
//! rebinding); the browser then sends the console that page's requests, treating the
//! console as part of the page's site, able to read every answer. Such a request names the
//! attacker's host in `Host`, so the console answers only to names an attacker cannot
//! point: IP addresses, `localhost`, and the names the administrator lists in
//! `manager_hosts`. Any other `Host` gets 421. The port does not matter: an attacker
//! chooses the name, not the port, and a console reached through a tunnel or a forwarded
//! port sees another port than its own.
//!
//! A form posted from a page says whose page in `Origin` (when the browser sends it): it
//! must be the console's own (the same host and port as `Host`, or a name of
//! `manager_hosts`), or the request is refused with 403.

use std::net::{Ipv4Addr, Ipv6Addr};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use canopy_config::config::HostList;
use canopy_config::versions::Db;

use crate::state::AppState;

/// Why a request was not let through to the console.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misdirected {
    #[error(
        "421 Misdirected Request: this console does not answer to the name {host:?}. It \
         answers to IP addresses, to localhost, and to the names in the setting \
         manager_hosts, so that a web page whose name was pointed at this address cannot \
         use it. If {host:?} is a name you give the console, add it to manager_hosts \
         (canopy config set manager_hosts \"NAMES\", keeping the names already there)."
    )]
    Host { host: String },
    #[error(
        "403 Forbidden: this was sent by a page of {origin:?}, not by a page of this console. \
         Open the console's own page and send it from there."
    )]
    Origin { origin: String },
}

impl IntoResponse for Misdirected {
    fn into_response(self) -> Response {
        let status = match self {
            Misdirected::Host { .. } => StatusCode::MISDIRECTED_REQUEST,
            Misdirected::Origin { .. } => StatusCode::FORBIDDEN,
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{self}\n"),
        )
            .into_response()
    }
}

/// The middleware: every request's names are checked before any handler runs.
pub async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let names = match manager_hosts(&state.db).await {
        Ok(names) => names,
        Err(e) => {
            tracing::error!("reading manager_hosts: {e:#}");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the console cannot read its database",
            )
                .into_response();
        }
    };
    match judge(request.method(), request.uri(), request.headers(), &names) {
        Ok(()) => next.run(request).await,
        Err(misdirected) => misdirected.into_response(),
    }
}

/// `manager_hosts` of the newest config version not rejected: the names take effect as
/// soon as they are saved, since the console, not the proxy, uses them.
async fn manager_hosts(db: &Db) -> anyhow::Result<HostList> {
    // Read whole and picked out here: SQLite and PostgreSQL name their JSON functions apart.
    let config: Option<String> = sqlx::query_scalar(
        "SELECT config FROM config_versions
         WHERE state != 'rejected' ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(db.pool())
    .await?;
    let config: serde_json::Value = match config {
        Some(text) => serde_json::from_str(&text)?,
        None => serde_json::Value::Null,
    };
    config["manager_hosts"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .map_err(|e: String| anyhow::anyhow!("manager_hosts: {e}"))
}

/// Whether a request names the console by a name it answers to and, for a change, comes
/// from one of its own pages. A request without `Host` is not a browser's, so not a
/// rebinding page's either.
pub fn judge(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    names: &HostList,
) -> Result<(), Misdirected> {
    let host = headers
        .get(header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let named = uri.authority().map(|a| a.as_str().to_owned());
    for authority in [&host, &named].into_iter().flatten() {
        if !answers_to(authority, names) {
            return Err(Misdirected::Host {
                host: authority.clone(),
            });
        }
    }
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if let (false, Some(origin)) = (safe, headers.get(header::ORIGIN)) {
        let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        let own = host.as_deref().or(named.as_deref());
        if !from_own_page(&origin, own, names) {
            return Err(Misdirected::Origin { origin });
        }
    }
    Ok(())
}

/// Whether `authority` (`host` or `host:port`) is an IP address, `localhost` or a name of
/// `names`, whatever the port.
fn answers_to(authority: &str, names: &HostList) -> bool {
    match split_authority(authority) {
        Some(Host::Address) => true,
        Some(Host::Name(name)) => name.eq_ignore_ascii_case("localhost") || names.contains(name),
        None => false,
    }
}

/// Whether `origin` (`scheme://host[:port]`) is a page of the console reached as `own`.
fn from_own_page(origin: &str, own: Option<&str>, names: &HostList) -> bool {
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let same = own.is_some_and(|own| own.eq_ignore_ascii_case(authority));
    let listed =
        matches!(split_authority(authority), Some(Host::Name(name)) if names.contains(name));
    same || listed
}

enum Host<'a> {
    /// An IP address, which no DNS answer can make another site's.
    Address,
    Name(&'a str),
}

/// The host of `host`, `host:port`, `[v6]` or `[v6]:port`; `None` when malformed.
fn split_authority(authority: &str) -> Option<Host<'_>> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return v6.parse::<Ipv6Addr>().ok().map(|_| Host::Address);
    }
    let host = match authority.split_once(':') {
        Some((host, port)) if is_port(port) => host,
        Some(_) => return None,
        None => authority,
    };
    if host.parse::<Ipv4Addr>().is_ok() {
        return Some(Host::Address);
    }
    (!host.is_empty()).then_some(Host::Name(host))
}

fn is_port(text: &str) -> bool {
    text.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests;
