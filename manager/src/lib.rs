//! Canopy's web console: Monitor and Configure, in the style of Traffic Manager.
//!
//! - [`accounts`]: console accounts (argon2 hashes), sessions and failed-login counting.
//! - [`hosts`]: the names the console answers to and the pages that may post to it
//!   (against DNS rebinding), checked before anything else.
//! - [`auth`]: the extractors that require a session, and the CSRF check of every form.
//! - [`login_limits`]: what checking passwords may cost: a bounded pool, back-off per
//!   address and per account, remembered scraper credentials.
//! - [`apply`]: Make These Changes: save a config version, ask the proxy to reload, and say
//!   plainly what happened.
//! - `listening`: where the console listens, moved live when `manager_listen` changes.
//! - [`proxy`]: the calls to the running proxy's control socket, each bounded in time.
//! - [`samples`]: the proxy's counters sampled into SQLite, thinned after a week, and read
//!   back as series for charts.
//! - [`charts`]: server-side SVG line charts (no script, no network).
//! - [`metrics`]: `/metrics` in the Prometheus text format.
//! - `pages`: one module per console page; `api`: the same data as JSON.
//! - [`unreachable`]: the page served while the database does not answer at start.

pub mod accounts;
mod api;
pub mod apply;
pub mod auth;
pub mod charts;
pub mod hosts;
mod landing;
mod listening;
pub mod login_limits;
pub mod metrics;
mod notice;
mod pages;
pub mod proxy;
pub mod samples;
mod state;
pub mod unreachable;

pub use state::AppState;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use canopy_config::versions::Db;

/// Every page, form, API call and static file of the console.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::monitor::dashboard))
        .route("/login", get(pages::login::form).post(pages::login::submit))
        .route("/logout", post(pages::login::logout))
        .route("/monitor/peers", get(pages::monitor::peers))
        .route("/monitor/clients", get(pages::clients::list))
        .route("/monitor/nodes", get(pages::nodes::list))
        .route("/monitor/nodes/canary", post(pages::nodes::canary))
        .route("/monitor/nodes/rollout", post(pages::nodes::roll_out))
        .route("/monitor/nodes/{node}", get(pages::nodes::own_settings))
        .route(
            "/monitor/nodes/{node}/settings",
            post(pages::nodes::set_own_settings),
        )
        .route("/monitor/peers/{name}", get(pages::monitor::peer))
        .route("/monitor/peers/{name}/use", post(pages::monitor::set_peer))
        .route(
            "/configure/routing",
            get(pages::routing::form).post(pages::routing::submit),
        )
        .route("/configure/routing/rules", post(pages::rules::submit))
        .route("/configure/routing/rules/new", get(pages::rules::new_form))
        .route(
            "/configure/routing/rules/import",
            get(pages::rules::import_form).post(pages::rules::import),
        )
        .route(
            "/configure/routing/rules/{number}",
            get(pages::rules::edit_form),
        )
        .route(
            "/configure/routing/rules/{number}/remove",
            post(pages::rules::remove),
        )
        .route(
            "/configure/routing/rules/{number}/up",
            post(pages::rules::move_up),
        )
        .route(
            "/configure/routing/rules/{number}/down",
            post(pages::rules::move_down),
        )
        .route(
            "/configure/peers",
            get(pages::peers::list).post(pages::peers::submit),
        )
        .route("/configure/peers/new", get(pages::peers::new_form))
        .route("/configure/peers/{name}", get(pages::peers::edit_form))
        .route("/configure/peers/{name}/remove", post(pages::peers::remove))
        .route(
            "/configure/{group}",
            get(pages::settings::form).post(pages::settings::submit),
        )
        .route("/configure/history", get(pages::history::list))
        .route("/configure/history/{id}", get(pages::history::show))
        .route(
            "/configure/history/{id}/restore",
            get(pages::history::confirm_restore).post(pages::history::restore),
        )
        .route(
            "/configure/history/{id}/discard",
            post(pages::history::discard),
        )
        .route(
            "/configure/accounts",
            get(pages::accounts::list).post(pages::accounts::add),
        )
        .route(
            "/configure/accounts/{name}/remove",
            post(pages::accounts::remove),
        )
        .route(
            "/configure/accounts/{name}/role",
            post(pages::accounts::set_role),
        )
        .route(
            "/configure/accounts/{name}/password",
            post(pages::accounts::new_password),
        )
        .route(
            "/cache/purge",
            get(pages::purge::form).post(pages::purge::submit),
        )
        .route("/api/status", get(api::status))
        .route("/api/stats", get(api::stats))
        .route("/api/peers", get(api::peers))
        .route("/api/peers/{name}/history", get(api::peer_history))
        .route("/api/history", get(api::history))
        .route("/api/config", get(api::config))
        .route("/metrics", get(metrics::render))
        .route("/static/canopy.css", get(stylesheet))
        .route("/static/canopy.js", get(script))
        .fallback(pages::no_such_page)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::changes_need_an_administrator,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), hosts::check))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

/// Every answer may only use the console's own files, and no other site may frame it
/// (a framed console could be clicked through by someone else's page).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/canopy.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../static/canopy.js"),
    )
}

/// How to run the console.
#[derive(Debug, Clone)]
pub struct Options {
    pub control: PathBuf,
    /// Where to listen; the config's `manager_listen` when not given.
    pub listen: Option<SocketAddr>,
    /// This console's node: the proxy it samples, and whose own settings it follows.
    pub node: String,
    /// How often the proxy's counters are sampled for the charts.
    pub sample_every: Duration,
}

/// Starts the sampler and serves the console until `shutdown` completes.
pub async fn run(
    db: Db,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listen = match options.listen {
        Some(listen) => listen,
        None => listening::wanted(&db, &options.node).await?,
    };
    let mut state = AppState::new(db.clone(), options.control);
    state.pinned_listen = options.listen;
    state.node = options.node;
    let node = state.node.clone();
    tokio::spawn(samples::run_sampler(
        state.clone(),
        node.clone(),
        options.sample_every,
    ));
    // Each client's address, for the limits on failed logins.
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    // An address given on the command line stays; otherwise the console follows the config.
    let follow = options.listen.is_none();
    listening::serve(db, node, app, listen, follow, shutdown).await
}
