//! Configure → ICP Peers: the peer table (Squid's cache_peer lines), with add, edit and
//! remove, each saved as a new config version and applied like every other change.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Form;
use canopy_config::config::{Config, HtcpPeer, Peer, PeerKind};

use super::{
    apply_and_show, current_version, Answer, Chrome, Editing, Fields, Notice, NoticePage, Refusal,
    NOT_SAVED,
};
use crate::accounts::Session;
use crate::auth::FormData;
use crate::state::AppState;

/// This page's address.
const HERE: &str = "/configure/peers";

#[derive(Template, WebTemplate)]
#[template(path = "peers_config.html")]
pub struct PeerListPage {
    chrome: Chrome,
    peers: Vec<Peer>,
    editing: Editing,
    notice: Option<Notice>,
}

impl PeerListPage {
    /// This page's address, for the link that opens a rejected version here.
    fn here(&self) -> &'static str {
        HERE
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "peer_form.html")]
pub struct PeerFormPage {
    chrome: Chrome,
    /// The name of the peer being edited; empty when adding one.
    original: String,
    fields: Fields,
    editing: Editing,
    notice: Option<Notice>,
    other_errors: Vec<String>,
}

impl PeerFormPage {
    fn here(&self) -> String {
        match self.original.as_str() {
            "" => "/configure/peers/new".to_owned(),
            name => format!("/configure/peers/{}", crate::auth::percent_encode(name)),
        }
    }
}

impl NoticePage for PeerListPage {
    fn with_notice(session: &Session, now: &Editing, notice: Notice) -> PeerListPage {
        list_page(session, now, Some(notice))
    }
}

fn list_page(session: &Session, editing: &Editing, notice: Option<Notice>) -> PeerListPage {
    PeerListPage {
        chrome: Chrome::new(session, "peers-config"),
        peers: editing.config().peers.clone(),
        editing: editing.clone(),
        notice,
    }
}

fn peer_fields(peer: &Peer) -> Fields {
    let mut fields = Fields::default();
    fields.set("name", &peer.name);
    fields.set("host", &peer.host);
    fields.set("type", peer.kind.as_str());
    fields.set("http_port", peer.http_port.to_string());
    fields.set("icp_port", peer.icp_port.to_string());
    fields.set("weight", peer.weight.to_string());
    let optional = |n: Option<String>| n.unwrap_or_default();
    fields.set(
        "connect_timeout_ms",
        optional(peer.connect_timeout_ms.map(|ms| ms.to_string())),
    );
    fields.set("max_conn", optional(peer.max_conn.map(|n| n.to_string())));
    fields.set("htcp", peer.htcp.as_str());
    for (key, on) in [
        ("multicast_responder", peer.multicast_responder),
        ("proxy_only", peer.proxy_only),
        ("no_query", peer.no_query),
        ("allow_miss", peer.allow_miss),
        ("deny_misses", peer.deny_misses),
        ("default_parent", peer.default_parent),
        ("round_robin", peer.round_robin),
        ("no_clr", peer.no_clr),
        ("only_clr", peer.only_clr),
        ("no_purge_clr", peer.no_purge_clr),
        ("forward_clr", peer.forward_clr),
        ("no_digest", peer.no_digest),
    ] {
        fields.set(key, on.to_string());
    }
    fields
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    editing: Editing,
) -> PeerListPage {
    let notice = state.landing.take(&session, HERE);
    list_page(&session, &editing, notice)
}

fn form_page(
    session: &Session,
    editing: &Editing,
    original: String,
    fields: Fields,
) -> PeerFormPage {
    PeerFormPage {
        chrome: Chrome::new(session, "peers-config"),
        original,
        fields,
        editing: editing.clone(),
        notice: None,
        other_errors: Vec::new(),
    }
}

pub async fn new_form(session: Session, editing: Editing) -> PeerFormPage {
    form_page(
        &session,
        &editing,
        String::new(),
        peer_fields(&Peer::default()),
    )
}

pub async fn edit_form(session: Session, Path(name): Path<String>, editing: Editing) -> Answer {
    let Some(peer) = editing.config().peers.iter().find(|p| p.name == name) else {
        return Err(no_such_peer(&session, &editing, &name).into());
    };
    Ok(form_page(&session, &editing, peer.name.clone(), peer_fields(peer)).into_response())
}

/// The peer list, refusing to show or change a peer that is not there.
fn no_such_peer(session: &Session, editing: &Editing, name: &str) -> Response {
    let notice = Notice::error(format!("There is no peer called {name:?}."));
    (
        StatusCode::NOT_FOUND,
        list_page(session, editing, Some(notice)),
    )
        .into_response()
}

fn parse_port(fields: &mut Fields, key: &str) -> u16 {
    match fields.v(key).trim().parse::<u32>() {
        Ok(p @ 1..=65535) => p as u16,
        _ => {
            let message = format!("{:?} is not a port number from 1 to 65535", fields.v(key));
            fields.set_error(key, message);
            0
        }
    }
}

/// Reads the posted peer; every field that cannot be read gets its error.
fn read_peer(form: &FormData) -> (Peer, Fields) {
    let mut fields = Fields::default();
    for key in [
        "name",
        "host",
        "type",
        "http_port",
        "icp_port",
        "weight",
        "connect_timeout_ms",
        "max_conn",
        "htcp",
    ] {
        fields.set(key, form.get(key).unwrap_or_default().trim());
    }
    for key in [
        "multicast_responder",
        "proxy_only",
        "no_query",
        "allow_miss",
        "deny_misses",
        "default_parent",
        "round_robin",
        "no_clr",
        "only_clr",
        "no_purge_clr",
        "forward_clr",
        "no_digest",
    ] {
        fields.set(key, form.checked(key).to_string());
    }
    // A form from before HTCP has no such field: asked over ICP.
    let htcp = match fields.v("htcp") {
        "" => Ok(HtcpPeer::Off),
        text => text.parse::<HtcpPeer>(),
    }
    .unwrap_or_else(|e| {
        fields.set_error("htcp", e);
        HtcpPeer::Off
    });
    let kind = fields.v("type").parse::<PeerKind>().unwrap_or_else(|e| {
        fields.set_error("type", e);
        PeerKind::Sibling
    });
    let weight = match fields.v("weight").parse::<u32>() {
        Ok(w) => w,
        Err(_) => {
            let message = format!(
                "{:?} is not a whole number of at least 1",
                fields.v("weight")
            );
            fields.set_error("weight", message);
            1
        }
    };
    let peer = Peer {
        name: fields.v("name").to_owned(),
        host: fields.v("host").to_owned(),
        kind,
        http_port: parse_port(&mut fields, "http_port"),
        icp_port: parse_port(&mut fields, "icp_port"),
        multicast_responder: fields.on("multicast_responder"),
        proxy_only: fields.on("proxy_only"),
        no_query: fields.on("no_query"),
        allow_miss: fields.on("allow_miss"),
        deny_misses: fields.on("deny_misses"),
        weight,
        default_parent: fields.on("default_parent"),
        round_robin: fields.on("round_robin"),
        connect_timeout_ms: parse_optional(&mut fields, "connect_timeout_ms"),
        max_conn: parse_optional(&mut fields, "max_conn"),
        htcp,
        no_clr: fields.on("no_clr"),
        only_clr: fields.on("only_clr"),
        no_purge_clr: fields.on("no_purge_clr"),
        forward_clr: fields.on("forward_clr"),
        no_digest: fields.on("no_digest"),
    };
    (peer, fields)
}

/// A whole number, or nothing when the field is left empty.
fn parse_optional<N: std::str::FromStr>(fields: &mut Fields, key: &str) -> Option<N> {
    let text = fields.v(key);
    if text.is_empty() {
        return None;
    }
    let number = text.parse().ok();
    if number.is_none() {
        let message = format!("{text:?} is not a whole number; leave it empty for none");
        fields.set_error(key, message);
    }
    number
}

/// The form field a peer error of the proxy's validation is about: its key says which
/// (`peers.NAME.FIELD`).
fn field_of(key: &str) -> Option<&'static str> {
    let field = key.strip_prefix("peers.")?.rsplit_once('.')?.1;
    [
        "name",
        "host",
        "http_port",
        "icp_port",
        "weight",
        "default_parent",
        "round_robin",
        "connect_timeout_ms",
        "max_conn",
        "no_clr",
        "only_clr",
        "no_purge_clr",
        "forward_clr",
    ]
    .into_iter()
    .find(|f| *f == field)
}

/// Adds (when `original` is empty) or replaces the peer called `original`.
fn with_peer(config: &Config, original: &str, peer: Peer) -> Option<Config> {
    let mut next = config.clone();
    if original.is_empty() {
        next.peers.push(peer);
    } else {
        let slot = next.peers.iter_mut().find(|p| p.name == original)?;
        *slot = peer;
    }
    Some(next)
}

pub async fn submit(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<FormData>,
) -> Answer {
    let editing = current_version::<PeerListPage>(&state, &session, &form).await?;
    let original = form.get("original").unwrap_or_default().to_owned();
    let (peer, mut fields) = read_peer(&form);
    let mut other_errors = Vec::new();
    let config = with_peer(editing.config(), &original, peer);
    if config.is_none() {
        other_errors.push(format!("There is no peer called {original:?} any more."));
    }
    if let (Some(config), false) = (&config, fields.has_errors()) {
        if let Err(errors) = config.validate() {
            for e in errors.0 {
                match field_of(&e.key) {
                    Some(field) => fields.set_error(field, e.message),
                    None => other_errors.push(e.to_string()),
                }
            }
        }
    }
    let config = match config {
        Some(config) if !fields.has_errors() && other_errors.is_empty() => config,
        _ => {
            let mut page = form_page(&session, &editing, original, fields);
            page.notice = Some(Notice::error(NOT_SAVED));
            page.other_errors = other_errors;
            return Err(Refusal::with(StatusCode::UNPROCESSABLE_ENTITY, page));
        }
    };
    apply_and_show::<PeerListPage>(&state, &session, &config, editing.based_on(), None, HERE).await
}

pub async fn remove(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    Form(form): Form<FormData>,
) -> Answer {
    let editing = current_version::<PeerListPage>(&state, &session, &form).await?;
    let mut config = editing.config().clone();
    let before = config.peers.len();
    config.peers.retain(|p| p.name != name);
    if config.peers.len() == before {
        return Err(no_such_peer(&session, &editing, &name).into());
    }
    apply_and_show::<PeerListPage>(&state, &session, &config, editing.based_on(), None, HERE).await
}
