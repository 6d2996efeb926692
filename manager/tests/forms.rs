//! Router tests of every console form, through the router as a tower service (no socket
//! for HTTP), with a fake proxy on a real control socket.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use canopy_config::config::{Config, Control, Group, SETTINGS};
use canopy_config::control::{CacheListReply, ReloadReply, ReopenReply, StatusReply};
use canopy_config::stats::{
    ClientSnapshot, DigestSnapshot, HealthSnapshot, PeerSnapshot, PeerState, StatsSnapshot,
};
use canopy_config::versions::{Db, VersionState};
use canopy_manager::{accounts, router, AppState};
use canopy_proxy::control::{self, ControlHandler, PeerChange};
use canopy_proxy::maintenance::{KnownPeer, MaintenanceError};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// A proxy that answers the control socket as told.
struct FakeProxy {
    reloads: AtomicU64,
    /// `Some(reason)`: reload is refused with it.
    refuse: Mutex<Option<String>>,
    in_force: AtomicU64,
    /// Each `set_peer` call: who asked, and the reason it went down or `None` for up.
    peer_changes: Mutex<Vec<(String, Option<String>)>>,
}

impl ControlHandler for FakeProxy {
    async fn status(&self) -> StatusReply {
        StatusReply {
            pid: 4242,
            version: "test".into(),
            uptime_s: 3725,
            config_version: self.in_force.load(Ordering::SeqCst) as i64,
            rejected_version: None,
            http_listen: "127.0.0.1:3128".into(),
            node: "test".into(),
            database_down: None,
            icp_listen: Some("127.0.0.1:3130".into()),
            manager_listen: "127.0.0.1:3129".into(),
        }
    }

    fn stats(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: 40,
            icp_queries_received: 9,
            icp_answers: [("DENIED".to_owned(), 1), ("MISS".to_owned(), 8)]
                .into_iter()
                .collect(),
            reloads_applied: 4,
            hits_fresh: 10,
            misses: 30,
            hit_ratio: 0.25,
            peers: vec![
                PeerSnapshot {
                    name: "squid".into(),
                    fetches: 7,
                    icp_queries: 31,
                    icp_replies: [("HIT".to_owned(), 11), ("MISS".to_owned(), 17)]
                        .into_iter()
                        .collect(),
                    icp_timeouts: 3,
                    icp_reply_ms_avg: 1.5,
                    state: Some(PeerState::Up),
                    false_hits: 2,
                    false_hits_icp: 2,
                    false_hits_digest: 4,
                    htcp_queries: 9,
                    htcp_hits: 2,
                    htcp_misses: 6,
                    htcp_timeouts: 1,
                    digest: Some(DigestSnapshot {
                        size: 4_096,
                        entries: 1_234,
                        fill_percent: 31.25,
                        age_s: Some(60),
                        last_fetch_at: "2026-01-02T03:04:05.000Z".into(),
                        last_fetch_outcome: "ok".into(),
                        ..DigestSnapshot::default()
                    }),
                    ..PeerSnapshot::default()
                },
                PeerSnapshot {
                    name: "127.0.0.1:3999".into(),
                    failures: 3,
                    health: HealthSnapshot {
                        down: true,
                        down_since: Some("2026-01-02T03:04:05.000Z".into()),
                        down_reason: Some("connection refused".into()),
                        down_by_hand: false,
                        down_by: None,
                    },
                    ..PeerSnapshot::default()
                },
            ],
            clients: vec![
                ClientSnapshot {
                    address: Some("127.0.0.2".parse().unwrap()),
                    peer: Some("squid".into()),
                    icp_queries: 314,
                    icp_answers: [("HIT".to_owned(), 100), ("MISS".to_owned(), 214)].into(),
                    objects: 97,
                    hits: 96,
                    bytes: 3 * 1024 * 1024,
                    last_seen_at: Some("2026-01-02T03:04:05.000Z".into()),
                },
                ClientSnapshot {
                    address: Some("127.0.0.3".parse().unwrap()),
                    icp_queries: 75,
                    icp_answers: [("DENIED".to_owned(), 75)].into(),
                    ..ClientSnapshot::default()
                },
            ],
            ..StatsSnapshot::default()
        }
    }

    async fn reload(&self) -> Result<ReloadReply, String> {
        self.reloads.fetch_add(1, Ordering::SeqCst);
        if let Some(reason) = self.refuse.lock().unwrap().clone() {
            return Err(reason);
        }
        let next = self.in_force.load(Ordering::SeqCst) + 1;
        self.in_force.store(next, Ordering::SeqCst);
        Ok(ReloadReply {
            config_version: next as i64,
            changed: true,
            elapsed_ms: 3,
        })
    }

    /// Knows one HTTP parent, 127.0.0.1:3999.
    async fn set_peer(&self, change: PeerChange) -> Result<PeerSnapshot, MaintenanceError> {
        let (name, asked) = match change {
            PeerChange::Down(down) => (down.name, (down.by, Some(down.reason))),
            PeerChange::Up { name, by } => (name, (by, None)),
        };
        if name != "127.0.0.1:3999" {
            return Err(MaintenanceError::Unknown {
                name,
                known: vec![KnownPeer {
                    name: "127.0.0.1:3999".into(),
                    kind: "HTTP parent",
                }],
            });
        }
        self.peer_changes.lock().unwrap().push(asked);
        Ok(PeerSnapshot {
            name,
            ..PeerSnapshot::default()
        })
    }

    async fn reopen_logs(&self) -> Result<ReopenReply, String> {
        Ok(ReopenReply { access_log: None })
    }

    async fn cache_list(&self, _prefix: String, limit: usize) -> CacheListReply {
        CacheListReply {
            urls: Vec::new(),
            limit,
            truncated: false,
            disk_unlisted: None,
        }
    }
}

struct Console {
    dir: tempfile::TempDir,
    db: Db,
    app: Router,
    proxy: Arc<FakeProxy>,
    cookie: String,
    csrf: String,
}

const PASSWORD: &str = "correct horse battery";

/// A console with one account; `running` says whether the fake proxy listens.
async fn console(running: bool) -> Console {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
    accounts::set_password(&db, "alice", PASSWORD)
        .await
        .unwrap();
    let socket: PathBuf = dir.path().join("canopy.sock");
    let proxy = Arc::new(FakeProxy {
        reloads: AtomicU64::new(0),
        refuse: Mutex::new(None),
        in_force: AtomicU64::new(1),
        peer_changes: Mutex::new(Vec::new()),
    });
    if running {
        tokio::spawn(control::serve(
            control::bind(&socket).unwrap(),
            proxy.clone(),
        ));
    }
    let mut state = AppState::new(db.clone(), socket);
    state.login_delay = Duration::from_millis(1);
    let app = router(state);
    let mut console = Console {
        dir,
        db,
        app,
        proxy,
        cookie: String::new(),
        csrf: String::new(),
    };
    console.log_in().await;
    console
}

fn set_cookie(response: &Response<Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// The value of the first hidden input called `name` in a page.
fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        + marker.len();
    body[start..start + body[start..].find('"').unwrap()].to_owned()
}

fn encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let escape = |s: &str| {
                s.bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                            (b as char).to_string()
                        }
                        b' ' => "+".to_owned(),
                        _ => format!("%{b:02X}"),
                    })
                    .collect::<String>()
            };
            format!("{}={}", escape(k), escape(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn body_text(response: Response<Body>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

impl Console {
    async fn send(&self, request: Request<Body>) -> Response<Body> {
        self.app.clone().oneshot(request).await.unwrap()
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let request = Request::get(path)
            .header(header::COOKIE, &self.cookie)
            .body(Body::empty())
            .unwrap();
        let response = self.send(request).await;
        (response.status(), body_text(response).await)
    }

    /// Posts a form as a browser does: a 303 answer is followed to its page.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
        let response = self.post_only(path, fields).await;
        if response.status() == StatusCode::SEE_OTHER {
            let location = response.headers()[header::LOCATION].to_str().unwrap();
            return self.get(location).await;
        }
        (response.status(), body_text(response).await)
    }

    /// Posts a form and answers what the POST itself answered.
    async fn post_only(&self, path: &str, fields: &[(&str, &str)]) -> Response<Body> {
        let request = Request::post(path)
            .header(header::COOKIE, &self.cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(encode(fields)))
            .unwrap();
        self.send(request).await
    }

    async fn log_in(&mut self) {
        let form = self
            .send(Request::get("/login").body(Body::empty()).unwrap())
            .await;
        let login_cookie = set_cookie(&form, "canopy_login").unwrap();
        let token = hidden(&body_text(form).await, "csrf");
        let request = Request::post("/login")
            .header(header::COOKIE, &login_cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(encode(&[
                ("csrf", &token),
                ("user", "alice"),
                ("password", PASSWORD),
            ])))
            .unwrap();
        let response = self.send(request).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        self.cookie = set_cookie(&response, "canopy_session").unwrap();
        let (_, page) = self.get("/configure/routing").await;
        self.csrf = hidden(&page, "csrf");
    }

    /// A Routing form as the page posts it, from the defaults of version `based_on`.
    fn routing_form(&self, based_on: &str) -> Vec<(&'static str, String)> {
        let form = self.settings_form(Group::Routing, based_on, &Config::default());
        with(form, "parents", "parent1:3128; parent2:8080;")
    }

    /// A settings page's form as a browser posts it, showing `config`: a box that is not
    /// ticked is left out, a list is one item per line.
    fn settings_form(
        &self,
        group: Group,
        based_on: &str,
        config: &Config,
    ) -> Vec<(&'static str, String)> {
        let mut form = vec![
            ("csrf", self.csrf.clone()),
            ("based_on", based_on.to_owned()),
        ];
        for setting in group.settings() {
            let value = config.get(setting.key).unwrap();
            match setting.control {
                Control::Checkbox if value == "false" => {}
                Control::List => form.push((setting.key, value.replace(", ", "\n"))),
                _ => form.push((setting.key, value)),
            }
        }
        form
    }

    async fn post_owned(
        &self,
        path: &str,
        fields: &[(&'static str, String)],
    ) -> (StatusCode, String) {
        let borrowed: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.post(path, &borrowed).await
    }

    async fn latest_id(&self) -> i64 {
        self.db.latest().await.unwrap().id
    }

    fn control_socket(&self) -> PathBuf {
        self.dir.path().join("canopy.sock")
    }

    fn reloads(&self) -> u64 {
        self.proxy.reloads.load(Ordering::SeqCst)
    }
}

fn with(
    mut form: Vec<(&'static str, String)>,
    key: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    form.retain(|(k, _)| *k != key);
    form.push((key, value.to_owned()));
    form
}

#[tokio::test]
async fn without_a_login_pages_redirect_and_the_api_refuses() {
    let console = console(true).await;
    for (path, login) in [
        ("/", "/login"),
        ("/monitor/peers", "/login?next=/monitor/peers"),
        ("/configure/routing", "/login?next=/configure/routing"),
        (
            "/configure/history?x=1&y",
            "/login?next=/configure/history%3Fx%3D1%26y",
        ),
    ] {
        let response = console
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(response.headers()[header::LOCATION], login, "{path}");
    }
    let post = Request::post("/configure/routing")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("parents=evil%3A1%3B"))
        .unwrap();
    let response = console.send(post).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/login");
    let api = console
        .send(Request::get("/api/stats").body(Body::empty()).unwrap())
        .await;
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(console.latest_id().await, 1);
}

#[tokio::test]
async fn the_session_cookie_is_httponly_and_strict_and_logout_ends_it() {
    let mut console = console(true).await;
    console.cookie.clear();
    let form = console
        .send(Request::get("/login").body(Body::empty()).unwrap())
        .await;
    let login_cookie = set_cookie(&form, "canopy_login").unwrap();
    let token = hidden(&body_text(form).await, "csrf");
    let request = Request::post("/login")
        .header(header::COOKIE, &login_cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(encode(&[
            ("csrf", &token),
            ("user", "alice"),
            ("password", PASSWORD),
        ])))
        .unwrap();
    let response = console.send(request).await;
    let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "DENY");
    let raw = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("canopy_session="))
        .unwrap();
    assert!(raw.contains("HttpOnly"), "{raw}");
    assert!(raw.contains("SameSite=Strict"), "{raw}");
    console.cookie = set_cookie(&response, "canopy_session").unwrap();
    let (status, page) = console.get("/").await;
    assert_eq!(status, StatusCode::OK);
    let csrf = hidden(&page, "csrf");
    let response = console.post_only("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let response = console
        .send(
            Request::get("/")
                .header(header::COOKIE, &console.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.headers()[header::LOCATION], "/login");
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_counted() {
    let console = console(true).await;
    let form = console
        .send(Request::get("/login").body(Body::empty()).unwrap())
        .await;
    let login_cookie = set_cookie(&form, "canopy_login").unwrap();
    let token = hidden(&body_text(form).await, "csrf");
    let attempt = |password: &str, token: &str| {
        Request::post("/login")
            .header(header::COOKIE, &login_cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(encode(&[
                ("csrf", token),
                ("user", "alice"),
                ("password", password),
            ])))
            .unwrap()
    };
    let response = console.send(attempt("guess", &token)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&response, "canopy_session").is_none());
    assert!(body_text(response)
        .await
        .contains("Wrong user name or password"));
    let response = console.send(attempt(PASSWORD, "forged")).await;
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "the login form needs its token too"
    );
    assert_eq!(accounts::failed_login_total(&console.db).await.unwrap(), 1);
    assert_eq!(
        accounts::record_failed_login(&console.db, "alice")
            .await
            .unwrap(),
        2,
        "the failure was counted for alice"
    );
}

#[tokio::test]
async fn a_parent_name_that_does_not_resolve_is_applied_with_a_warning() {
    let console = console(true).await;
    let form = with(
        console.routing_form("1"),
        "parents",
        "nowhere.invalid:3128;",
    );
    let (status, page) = console.post_owned("/configure/routing", &form).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Applied: version 2 is in force"), "{page}");
    assert!(
        page.contains("Warning: nowhere.invalid does not resolve"),
        "{page}"
    );
}

#[tokio::test]
async fn a_valid_routing_post_saves_a_version_and_reloads() {
    let console = console(true).await;
    let (status, page) = console
        .post_owned("/configure/routing", &console.routing_form("1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Applied: version 2 is in force"), "{page}");
    assert_eq!(console.reloads(), 1);
    let latest = console.db.latest().await.unwrap();
    assert_eq!(latest.id, 2);
    assert_eq!(latest.author, "alice");
    let config = latest.config;
    assert_eq!(config.parents.to_string(), "parent1:3128; parent2:8080;");
    assert_eq!(config.round_robin.as_str(), "false");
    assert_eq!(config.retry_statuses.to_string(), "502, 503");
    assert!(!config.never_direct.0, "an unchecked box is off");
    assert_eq!(
        hidden(&page, "based_on"),
        "2",
        "the form now edits version 2"
    );
    let hashed = with(console.routing_form("2"), "round_robin", "consistent_hash");
    let (status, page) = console.post_owned("/configure/routing", &hashed).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("<option value=\"consistent_hash\" selected>"),
        "{page}"
    );
    assert_eq!(console.reloads(), 2);
}

#[tokio::test]
async fn each_invalid_routing_value_is_shown_beside_its_field_and_nothing_is_saved() {
    let console = console(true).await;
    let cases = [
        ("parents", "parent1:3128; parent2", "is not host:port"),
        ("parents", "parent1:99999;", "not a number from 1 to 65535"),
        ("round_robin", "sideways", "is not a round robin mode"),
        ("fail_threshold", "0", "expected at least 1 failure"),
        ("retry_time_s", "soon", "expected a whole number, 0 or more"),
    ];
    for (key, value, message) in cases {
        let form = with(console.routing_form("1"), key, value);
        let page = console
            .refused_beside("/configure/routing", &form, key, value, message)
            .await;
        if key != "round_robin" {
            assert!(
                page.contains(&format!("value=\"{value}\"")),
                "{key}: the input is kept"
            );
        }
    }
}

#[tokio::test]
async fn each_invalid_icp_value_is_shown_beside_its_field_and_nothing_is_saved() {
    let console = console(true).await;
    let cases = [
        ("icp_port", "0", "port number from 1 to 65535"),
        ("icp_port", "70000", "port number from 1 to 65535"),
        ("icp_multicast_group", "10.0.0.1", "224.0.0.0/4"),
        ("icp_mode", "sometimes", "is not an ICP mode"),
        ("icp_multicast_ttl", "300", "from 0 to 255"),
        ("icp_multicast_ttl", "0", "TTL from 1 to 255"),
        (
            "icp_allowed_clients",
            "10.0.0.0/8\nchild",
            "is not an address",
        ),
    ];
    for (key, value, message) in cases {
        let form = console.settings_form(Group::Icp, "1", &Config::default());
        let form = with(form, key, value);
        console
            .refused_beside("/configure/icp", &form, key, value, message)
            .await;
    }
}

impl Console {
    /// Posts `form`, which sets `key` to a wrong `value`: it must be refused with `message`
    /// under the field of `key` and nothing saved. Returns the page.
    async fn refused_beside(
        &self,
        path: &str,
        form: &[(&'static str, String)],
        key: &str,
        value: &str,
        message: &str,
    ) -> String {
        let (status, page) = self.post_owned(path, form).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{key}={value}");
        let field = page
            .find(&format!("id=\"{key}\""))
            .unwrap_or_else(|| panic!("no field {key}"));
        let beside = &page[field..];
        let error = beside
            .find("<p class=\"error\">")
            .expect("an error after the field");
        let next_field = beside[1..]
            .find("<div class=\"field")
            .unwrap_or(beside.len());
        assert!(
            error < next_field,
            "{key}={value}: the error is not beside its field"
        );
        assert!(
            beside[error..].contains(&message.replace('"', "&quot;")),
            "{key}={value}: {}",
            &beside[error..error + 200]
        );
        assert!(page.contains("Nothing was saved"));
        assert_eq!(self.latest_id().await, 1, "{key}={value} saved a version");
        assert_eq!(self.reloads(), 0);
        page
    }
}

/// What Bob changes on each settings page in `stale_versions`: (group, key, value, what the
/// page then shows).
const BOB_CHANGES: [(Group, &str, &str, &str); 6] = [
    (
        Group::Proxy,
        "visible_name",
        "bobs-cache",
        "value=\"bobs-cache\"",
    ),
    (Group::Cache, "cache_mem", "300M", "value=\"300M\""),
    (Group::Icp, "icp_port", "3999", "value=\"3999\""),
    (
        Group::Timeouts,
        "connect_timeout_ms",
        "4321",
        "value=\"4321\"",
    ),
    (Group::Logging, "access_log", "bob.log", "value=\"bob.log\""),
    (
        Group::Console,
        "manager_hosts",
        "bob.example",
        ">bob.example</textarea>",
    ),
];

fn group_path(group: Group) -> &'static str {
    format!("/configure/{}", group.slug()).leak()
}

/// A form as its page posts it, without its CSRF token.
struct PostedForm {
    path: &'static str,
    fields: Vec<(&'static str, String)>,
    /// What the page refusing it as stale shows of the version now in force (see
    /// `stale_versions`), escaped as in HTML.
    shows: &'static str,
}

impl Console {
    /// Every form that changes the config, made from version 1.
    fn config_forms(&self) -> Vec<PostedForm> {
        let without_token = |form: Vec<(&'static str, String)>| {
            form.into_iter().filter(|(k, _)| *k != "csrf").collect()
        };
        let routing = "value=\"someone-else:3128;\"";
        let rules = "<code>dest_domain=bob.test</code>";
        let only_based_on = || vec![("based_on", "1".to_owned())];
        let form = |path, fields, shows| PostedForm {
            path,
            fields,
            shows,
        };
        let peer = [
            ("based_on", "1"),
            ("name", "squid"),
            ("host", "10.0.0.2"),
            ("type", "sibling"),
            ("http_port", "3128"),
            ("icp_port", "3130"),
            ("weight", "1"),
        ]
        .map(|(k, v)| (k, v.to_owned()))
        .to_vec();
        vec![
            form(
                "/configure/routing",
                without_token(self.routing_form("1")),
                routing,
            ),
            form(
                "/configure/routing/rules",
                without_token(self.rule_form("1")),
                rules,
            ),
            form("/configure/routing/rules/1/remove", only_based_on(), rules),
            form("/configure/routing/rules/1/up", only_based_on(), rules),
            form("/configure/routing/rules/1/down", only_based_on(), rules),
            form(
                "/configure/routing/rules/import",
                vec![("based_on", "1".to_owned()), ("rules", String::new())],
                rules,
            ),
            form("/configure/peers", peer, "bob-peer"),
            form("/configure/peers/squid/remove", only_based_on(), "bob-peer"),
            form(
                "/configure/history/1/restore",
                with(only_based_on(), "confirm", "yes"),
                "Version 2",
            ),
        ]
        .into_iter()
        .chain(BOB_CHANGES.iter().map(|(group, _, _, shows)| {
            let fields = self.settings_form(*group, "1", &Config::default());
            form(group_path(*group), without_token(fields), shows)
        }))
        .collect()
    }

    /// Every form of the console that needs its session's CSRF token.
    fn every_form(&self) -> Vec<PostedForm> {
        let mut forms = self.config_forms();
        for (path, fields) in [
            (
                "/monitor/peers/127.0.0.1:3999/use",
                vec![("action", "down".to_owned())],
            ),
            ("/logout", Vec::new()),
            ("/configure/history/1/discard", Vec::new()),
        ] {
            forms.push(PostedForm {
                path,
                fields,
                shows: "",
            });
        }
        forms
    }

    /// Bob saves version 2 (a parent, a rule and a peer) while forms made from version 1
    /// are open.
    async fn stale_versions(&self) {
        let mut other = self.db.latest().await.unwrap().config;
        other.set("parents", "someone-else:3128;").unwrap();
        other.parent_rules =
            canopy_config::import::parent_config::parse("dest_domain=bob.test parent=\"b:3128\"")
                .unwrap()
                .into_rules();
        let peer = serde_json::json!({
            "name": "bob-peer", "host": "10.0.0.9", "type": "sibling",
            "http_port": 3128, "icp_port": 3130,
        });
        other.peers.push(serde_json::from_value(peer).unwrap());
        for (_, key, value, _) in BOB_CHANGES {
            other.set(key, value).unwrap();
        }
        self.db.save_change(&other, "bob", Some(1)).await.unwrap();
    }
}

#[tokio::test]
async fn every_form_without_its_csrf_token_is_forbidden() {
    let console = console(true).await;
    for form in console.every_form() {
        let (status, _) = console.post_owned(form.path, &form.fields).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{} without a token",
            form.path
        );
        let forged = with(form.fields, "csrf", "0000");
        let (status, _) = console.post_owned(form.path, &forged).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{} with a forged token",
            form.path
        );
    }
    assert_eq!(console.latest_id().await, 1);
    assert_eq!(console.reloads(), 0);
    assert!(console.proxy.peer_changes.lock().unwrap().is_empty());
}

#[tokio::test]
async fn every_form_made_from_an_old_version_is_refused_and_shows_the_current_values() {
    let console = console(true).await;
    console.stale_versions().await;
    for form in console.config_forms() {
        let posted = with(form.fields, "csrf", &console.csrf);
        let (status, page) = console.post_owned(form.path, &posted).await;
        assert_eq!(status, StatusCode::CONFLICT, "{}", form.path);
        assert!(
            page.contains("Not saved: this form was made from version 1"),
            "{}: {page}",
            form.path
        );
        assert!(
            page.contains("bob saved version 2"),
            "{}: {page}",
            form.path
        );
        assert!(page.contains(form.shows), "{}: {page}", form.path);
        assert_eq!(hidden(&page, "based_on"), "2", "{}", form.path);
    }
    assert_eq!(console.latest_id().await, 2);
    assert_eq!(console.reloads(), 0);
}

#[tokio::test]
async fn with_the_proxy_down_the_version_is_saved_and_the_page_says_so() {
    let console = console(false).await;
    let (status, page) = console
        .post_owned("/configure/routing", &console.routing_form("1"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(
            "Saved as version 2, but the proxy is not running. It will start with this version."
        ),
        "{page}"
    );
    assert_eq!(console.latest_id().await, 2);
    let (_, dashboard) = console.get("/").await;
    assert!(
        dashboard.contains("The proxy is not running"),
        "{dashboard}"
    );
}

#[tokio::test]
async fn a_version_the_proxy_rejects_is_reported_with_its_reason() {
    let console = console(true).await;
    *console.proxy.refuse.lock().unwrap() =
        Some("icp_port 3131: address already in use".to_owned());
    let (status, page) = console
        .post_owned("/configure/routing", &console.routing_form("1"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(
            "Version 2 was saved but rejected by the proxy: icp_port 3131: address already in use. \
             Nothing changed: version 1 is still in force."
        ),
        "{page}"
    );
    assert_eq!(console.reloads(), 1);
}

#[tokio::test]
async fn peers_are_added_edited_checked_and_removed() {
    let console = console(true).await;
    let peer = |based_on: &'static str,
                original: &'static str,
                icp_port: &'static str,
                kind: &'static str| {
        vec![
            ("csrf", console.csrf.clone()),
            ("based_on", based_on.to_owned()),
            ("original", original.to_owned()),
            ("name", "squid".to_owned()),
            ("host", "10.0.0.2".to_owned()),
            ("type", kind.to_owned()),
            ("http_port", "3128".to_owned()),
            ("icp_port", icp_port.to_owned()),
            ("weight", "2".to_owned()),
            ("proxy_only", "true".to_owned()),
        ]
    };
    let (status, page) = console
        .post_owned("/configure/peers", &peer("1", "", "3130", "sibling"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Applied: version 2"), "{page}");
    let config = console.db.latest().await.unwrap().config;
    assert_eq!(config.peers.len(), 1);
    assert!(config.peers[0].proxy_only && !config.peers[0].no_query);
    assert_eq!(config.peers[0].weight, 2);

    for (port, kind, message) in [
        ("70000", "sibling", "is not a port number from 1 to 65535"),
        ("0", "sibling", "is not a port number from 1 to 65535"),
        ("3130", "cousin", "is not a peer type"),
    ] {
        let (status, page) = console
            .post_owned("/configure/peers", &peer("2", "squid", port, kind))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{port} {kind}");
        assert!(page.contains(message), "{message}: {page}");
        assert_eq!(console.latest_id().await, 2);
    }
    let (status, page) = console
        .post_owned("/configure/peers", &peer("2", "", "3130", "sibling"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("two peers have this name"), "{page}");

    let (status, _) = console
        .post_owned("/configure/peers", &peer("2", "squid", "3140", "parent"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let config = console.db.latest().await.unwrap().config;
    assert_eq!(config.peers[0].icp_port, 3140);
    let (_, history) = console.get("/configure/history").await;
    assert!(
        history.contains("peer squid: icp_port 3130 → 3140, type sibling → parent"),
        "{history}"
    );
    assert_eq!(config.peers[0].kind.as_str(), "parent");

    let (status, page) = console
        .post(
            "/configure/peers/squid/remove",
            &[("csrf", &console.csrf), ("based_on", "3")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Applied: version 4"), "{page}");
    assert!(console.db.latest().await.unwrap().config.peers.is_empty());
    assert_eq!(console.reloads(), 3);
}

#[tokio::test]
async fn history_shows_each_change_and_restores_a_version() {
    let console = console(true).await;
    console
        .post_owned("/configure/routing", &console.routing_form("1"))
        .await;
    let (status, page) = console.get("/configure/history").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("parents: (empty) → parent1:3128; parent2:8080;"),
        "{page}"
    );
    assert!(page.contains("Restore this version"));
    let (status, detail) = console.get("/configure/history/1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        detail.contains("parents: parent1:3128; parent2:8080; → (empty)"),
        "{detail}"
    );
    let (status, page) = console
        .post(
            "/configure/history/1/restore",
            &[
                ("csrf", &console.csrf),
                ("based_on", "2"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Applied: version 3"), "{page}");
    let v3 = console.db.latest().await.unwrap();
    assert_eq!(v3.config, console.db.get(1).await.unwrap().config);
    assert!(
        v3.summary.starts_with("restored version 1: "),
        "{}",
        v3.summary
    );
}

#[tokio::test]
async fn monitor_pages_api_and_metrics_show_the_proxy_s_figures() {
    let console = console(true).await;
    let (status, dashboard) = console.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(dashboard.contains("pid 4242"), "{dashboard}");
    assert!(dashboard.contains("25.0 %"));
    assert!(
        dashboard.contains("we answered: DENIED 1 · MISS 8"),
        "{dashboard}"
    );
    assert!(
        dashboard.contains("reloads: 4 applied · 0 rejected"),
        "{dashboard}"
    );
    assert!(dashboard.contains("<svg"));
    assert!(
        dashboard.contains("Console: 0 failed logins so far."),
        "{dashboard}"
    );
    let (_, peers) = console.get("/monitor/peers").await;
    assert!(
        peers.contains("squid") && peers.contains(">31<") && peers.contains(">11<"),
        "{peers}"
    );
    assert!(
        peers.contains("down since 2026-01-02 03:04:05 UTC: connection refused"),
        "an HTTP parent out of use says why: {peers}"
    );
    let (status, peer) = console.get("/monitor/peers/squid").await;
    assert_eq!(status, StatusCode::OK);
    assert!(peer.contains("2 false hits · ICP 2"), "{peer}");
    assert!(
        peer.contains("9 TST queries") && peer.contains("2 HIT · 6 MISS · 1 timeout<"),
        "HTCP's answers and timeouts beside ICP's: {peer}"
    );
    assert!(
        peers.contains(">False hits</th>") && peers.contains("<th class=\"num minor\">ICP</th>"),
        "a false-hit column per method: {peers}"
    );
    assert!(
        peer.contains("1234 entries")
            && peer.contains("31.2% of bits on")
            && peer.contains("4 false hits"),
        "the digest's figures: {peer}"
    );
    let (status, json) = console.get("/api/stats").await;
    assert_eq!(status, StatusCode::OK);
    let stats: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(stats["peers"][0]["icp_queries"], 31);
    let (_, json) = console.get("/api/peers").await;
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rows["peers"][0]["false_hits"], 2);

    let (_, json) = console.get("/api/status").await;
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["running"], true);
    assert_eq!(status["status"]["pid"], 4242);
    let (_, json) = console.get("/api/history").await;
    let history: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(history[0]["id"], 1);
    let (_, json) = console.get("/api/config").await;
    let config: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(config["config"]["icp_port"], 3130);
    let snapshot = canopy_manager::proxy::stats(&console.control_socket())
        .await
        .unwrap();
    canopy_manager::samples::record(&console.db, "node1", accounts::unix_now() - 5, &snapshot)
        .await
        .unwrap();
    let (_, json) = console.get("/api/peers/squid/history?minutes=10").await;
    let history: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(history["columns"][3], "icp_queries");
    assert_eq!(history["samples"][0]["values"][3], 31.0);

    let (status, metrics) = console.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.contains("canopy_peer_icp_replies_total{peer=\"squid\",opcode=\"HIT\"} 11"));
    assert!(
        metrics.contains("canopy_peer_false_hits_total{peer=\"squid\",method=\"icp\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("canopy_peer_down{peer=\"127.0.0.1:3999\"} 1"),
        "{metrics}"
    );
    let scrape = |auth: &str| {
        Request::get("/metrics")
            .header(header::AUTHORIZATION, auth)
            .body(Body::empty())
            .unwrap()
    };
    use base64::Engine;
    let good = base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}"));
    let response = console.send(scrape(&format!("Basic {good}"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let bad = base64::engine::general_purpose::STANDARD.encode("alice:nope");
    let response = console.send(scrape(&format!("Basic {bad}"))).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_peer_is_taken_down_and_brought_up_by_the_account_that_asked() {
    let console = console(true).await;
    let (status, page) = console
        .post(
            "/monitor/peers/127.0.0.1:3999/use",
            &[
                ("csrf", &console.csrf),
                ("action", "down"),
                ("reason", "maintenance"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("127.0.0.1:3999 is down: it gets no requests and no ICP queries"),
        "{page}"
    );
    let (_, page) = console
        .post(
            "/monitor/peers/127.0.0.1:3999/use",
            &[("csrf", &console.csrf), ("action", "up")],
        )
        .await;
    assert!(
        page.contains("127.0.0.1:3999 is up, back to the health checks."),
        "{page}"
    );
    assert_eq!(
        *console.proxy.peer_changes.lock().unwrap(),
        [
            ("alice".to_owned(), Some("maintenance".to_owned())),
            ("alice".to_owned(), None)
        ]
    );
    let (_, page) = console
        .post(
            "/monitor/peers/squid/use",
            &[("csrf", &console.csrf), ("action", "down")],
        )
        .await;
    assert!(
        page.contains("nor a sibling; the peers are: 127.0.0.1:3999 (HTTP parent)."),
        "{page}"
    );
}

#[tokio::test]
async fn after_logging_in_the_page_asked_for_opens_and_never_another_site() {
    let console = console(true).await;
    for (next, lands) in [
        ("/configure/history", "/configure/history"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
    ] {
        let form = console
            .send(Request::get("/login").body(Body::empty()).unwrap())
            .await;
        let login_cookie = set_cookie(&form, "canopy_login").unwrap();
        let token = hidden(&body_text(form).await, "csrf");
        let request = Request::post("/login")
            .header(header::COOKIE, &login_cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(encode(&[
                ("csrf", &token),
                ("user", "alice"),
                ("password", PASSWORD),
                ("next", next),
            ])))
            .unwrap();
        let response = console.send(request).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers()[header::LOCATION], lands, "{next}");
    }
}

impl Console {
    /// A rule form as the rule page posts it: a per-domain rule, added at the end.
    fn rule_form(&self, based_on: &str) -> Vec<(&'static str, String)> {
        vec![
            ("csrf", self.csrf.clone()),
            ("based_on", based_on.to_owned()),
            ("number", "0".to_owned()),
            ("dest_domain", "a.test".to_owned()),
            ("dest_host", "".to_owned()),
            ("dest_ip", "".to_owned()),
            ("url_regex", "".to_owned()),
            ("scheme", "".to_owned()),
            ("port", "".to_owned()),
            ("method", "".to_owned()),
            ("parents", "p1:3128;".to_owned()),
            ("round_robin", "false".to_owned()),
        ]
    }

    /// Posts one of a rule's buttons (up, down, remove) as the Routing page does.
    async fn rule_button(
        &self,
        number: usize,
        action: &str,
        based_on: &str,
    ) -> (StatusCode, String) {
        self.post(
            &format!("/configure/routing/rules/{number}/{action}"),
            &[("csrf", &self.csrf), ("based_on", based_on)],
        )
        .await
    }

    async fn rule_matchers(&self) -> Vec<String> {
        let config = self.db.latest().await.unwrap().config;
        config.parent_rules.iter().map(|r| r.matcher()).collect()
    }
}

#[tokio::test]
async fn rules_are_added_edited_moved_and_removed_each_as_a_version() {
    let console = console(true).await;
    let (_, page) = console.get("/configure/routing").await;
    assert!(page.contains("No rules"), "{page}");
    let (status, page) = console.get("/configure/routing/rules/new").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("id=\"go_direct\" name=\"go_direct\" value=\"true\" checked"),
        "a new rule may go direct: {page}"
    );

    let (status, page) = console
        .post_owned("/configure/routing/rules", &console.rule_form("1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Applied: version 2 is in force"), "{page}");
    let rule = console.db.latest().await.unwrap().config.parent_rules[0].clone();
    assert_eq!(rule.dest_domain.as_deref(), Some("a.test"));
    assert_eq!(rule.parents.to_string(), "p1:3128;");
    assert!(!rule.go_direct, "an unchecked box is off");
    assert!(rule.dest_host.is_none() && rule.port.is_none() && rule.scheme.is_none());
    assert!(page.contains("<code>dest_domain=a.test</code>"), "{page}");
    assert_eq!(hidden(&page, "based_on"), "2");

    let iso = [
        ("dest_domain", ""),
        ("url_regex", r"\.iso$"),
        ("parents", "p1:3128|1; p2:3128|3;"),
        ("round_robin", "consistent_hash"),
        ("go_direct", "true"),
    ];
    let form = iso
        .iter()
        .fold(console.rule_form("2"), |form, (k, v)| with(form, k, v));
    let (status, page) = console.post_owned("/configure/routing/rules", &form).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Applied: version 3"), "{page}");
    let config = console.db.latest().await.unwrap().config;
    assert_eq!(
        config.parent_rules[1].parents.to_string(),
        "p1:3128; p2:3128|3;"
    );
    assert_eq!(
        config.parent_rules[1].round_robin.as_str(),
        "consistent_hash"
    );
    assert!(config.parent_rules[1].go_direct);

    let edit = [
        ("number", "1"),
        ("dest_domain", "b.test"),
        ("scheme", "http"),
        ("port", "8080"),
        ("method", "GET"),
    ];
    let form = edit
        .iter()
        .fold(console.rule_form("3"), |form, (k, v)| with(form, k, v));
    let (status, page) = console.post_owned("/configure/routing/rules", &form).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Applied: version 4"), "{page}");
    assert_eq!(
        console.rule_matchers().await,
        [
            "dest_domain=b.test scheme=http method=GET port=8080",
            r"url_regex=\.iso$"
        ]
    );
    let (status, page) = console.get("/configure/routing/rules/1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("value=\"b.test\""), "{page}");
    assert!(page.contains("<option value=\"http\" selected>"), "{page}");
    let (status, _) = console.get("/configure/routing/rules/3").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, page) = console.rule_button(2, "up", "4").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Applied: version 5"), "{page}");
    assert_eq!(console.rule_matchers().await[0], r"url_regex=\.iso$");
    let (status, _) = console.rule_button(1, "down", "5").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(console.rule_matchers().await[1], r"url_regex=\.iso$");
    for (number, action, status, message) in [
        (
            1,
            "up",
            StatusCode::UNPROCESSABLE_ENTITY,
            "rule 1 is already the first",
        ),
        (
            2,
            "down",
            StatusCode::UNPROCESSABLE_ENTITY,
            "rule 2 is already the last",
        ),
        (3, "up", StatusCode::NOT_FOUND, "there is no rule 3"),
        (3, "remove", StatusCode::NOT_FOUND, "There is no rule 3"),
        (0, "remove", StatusCode::NOT_FOUND, "There is no rule 0"),
    ] {
        let (got, page) = console.rule_button(number, action, "6").await;
        assert_eq!(got, status, "{number} {action}");
        assert!(page.contains(message), "{message}: {page}");
    }
    assert_eq!(
        console.latest_id().await,
        6,
        "impossible moves save nothing"
    );

    let (status, page) = console.rule_button(1, "remove", "6").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Applied: version 7"), "{page}");
    assert_eq!(console.rule_matchers().await, [r"url_regex=\.iso$"]);
    assert_eq!(console.reloads(), 6);
    let (_, history) = console.get("/configure/history").await;
    for change in [
        "rule 1 added: dest_domain=a.test parent=",
        "rule 1: dest_domain=a.test parent=&#34;p1:3128;&#34; round_robin=false go_direct=false \
         → dest_domain=b.test scheme=http method=GET port=8080 parent=",
        r"rule 2 moved up: url_regex=\.iso$",
        "rule 1 removed: dest_domain=b.test",
    ] {
        assert!(history.contains(change), "{change}: {history}");
    }
}

/// Fields changed in a form, the field whose error is expected, and words of that error.
type BadRule = (
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
);

#[tokio::test]
async fn each_invalid_rule_field_is_shown_beside_it_and_nothing_is_saved() {
    let console = console(true).await;
    let cases: [BadRule; 8] = [
        (&[("url_regex", "(")], "url_regex", "does not compile"),
        (
            &[("dest_ip", "10.0.0.0/33")],
            "dest_ip",
            "expected an address or CIDR network",
        ),
        (&[("parents", "p1:3128; p2")], "parents", "is not host:port"),
        (
            &[("parents", "p1:3128|0;")],
            "parents",
            "is not a whole number from 1 to 1000",
        ),
        (&[("port", "0")], "port", "expected 1 to 65535"),
        (&[("port", "70000")], "port", "is not a port number"),
        (&[("method", "get")], "method", "upper-case method"),
        (
            &[("parents", ""), ("go_direct", "")],
            "parents",
            "must allow go_direct",
        ),
    ];
    for (changes, key, message) in cases {
        let form = changes
            .iter()
            .filter(|(k, _)| *k != "go_direct")
            .fold(console.rule_form("1"), |form, (k, v)| with(form, k, v));
        let (status, page) = console.post_owned("/configure/routing/rules", &form).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{changes:?}");
        let field = page
            .find(&format!("id=\"{key}\""))
            .unwrap_or_else(|| panic!("no field {key}"));
        let beside = &page[field..];
        let error = beside
            .find("<p class=\"error\">")
            .unwrap_or_else(|| panic!("{changes:?}: no error after {key}"));
        let next_field = beside[1..]
            .find("<div class=\"field")
            .unwrap_or(beside.len());
        assert!(
            error < next_field,
            "{changes:?}: the error is not beside {key}"
        );
        assert!(
            beside[error..].contains(&message.replace('"', "&quot;")),
            "{changes:?}: {}",
            &beside[error..error + 200]
        );
        let (_, value) = changes[0];
        assert!(
            page.contains(&format!("name=\"{key}\" value=\"{value}\"")),
            "{key}: the input is kept"
        );
        assert!(page.contains("Nothing was saved"));
        assert_eq!(console.latest_id().await, 1, "{changes:?} saved a version");
    }

    let nothing = with(console.rule_form("1"), "dest_domain", "");
    let (status, page) = console
        .post_owned("/configure/routing/rules", &nothing)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = page
        .find("id=\"matcher-error\"")
        .expect("the matcher error");
    assert!(
        page[error..].starts_with(
            "id=\"matcher-error\">a rule needs dest_domain, dest_host, dest_ip or url_regex"
        ),
        "{}",
        &page[error..error + 120]
    );
    assert!(
        page.contains("value=\"p1:3128;\""),
        "the other fields are kept"
    );

    let gone = with(console.rule_form("1"), "number", "4");
    let (status, page) = console.post_owned("/configure/routing/rules", &gone).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("there is no rule 4 any more"), "{page}");
    assert_eq!(console.latest_id().await, 1);
    assert_eq!(console.reloads(), 0);
}

#[tokio::test]
async fn parent_config_import_refuses_unreadable_lines_and_says_what_it_ignores() {
    let console = console(true).await;
    let (status, page) = console.get("/configure/routing/rules/import").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("<textarea id=\"rules\" name=\"rules\""),
        "{page}"
    );

    let bad = "# from Traffic Server\n\
               dest_domain=a.test parent=\"p:1\" port=http\n\
               dest_host=ok.test parent=\"p:1\"\n\
               dest_ip=1.2.3.0-1.2.3.255 parent=\"p\n";
    let import = |text: &str| {
        vec![
            ("csrf", console.csrf.clone()),
            ("based_on", "1".to_owned()),
            ("rules", text.to_owned()),
        ]
    };
    let (status, page) = console
        .post_owned("/configure/routing/rules/import", &import(bad))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.contains("line 2: port=http: expected a port number"),
        "{page}"
    );
    assert!(
        page.contains("line 4: parent= has an unclosed quote"),
        "{page}"
    );
    assert!(page.contains("Nothing was imported"), "{page}");
    assert!(
        page.contains("dest_host=ok.test parent=&#34;p:1&#34;"),
        "the text is kept: {page}"
    );
    let invalid = "dest_domain=a.test parent=\"p:1\"\n\n# then\nurl_regex=( parent=\"p:1\"\n";
    let (status, page) = console
        .post_owned("/configure/routing/rules/import", &import(invalid))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.contains("line 4: url_regex does not compile"),
        "{page}"
    );
    assert_eq!(console.latest_id().await, 1);

    let good = "dest_domain=a.test parent=\"p1:3128\" go_direct=false qstring=ignore\n\
                dest_ip=1.2.3.0-1.2.3.255 parent=\"p:1\"\n\
                url_regex=\\.iso$ parent=\"p1:3128|1.0; p2:3128|3.0\" round_robin=consistent_hash\n";
    let (status, page) = console
        .post_owned("/configure/routing/rules/import", &import(good))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Applied: version 2"), "{page}");
    assert!(
        page.contains("Warning: line 1: qstring=ignore ignored"),
        "{page}"
    );
    assert!(
        page.contains("Warning: line 2: rule not imported: dest_ip=1.2.3.0-1.2.3.255"),
        "{page}"
    );
    assert_eq!(
        console.rule_matchers().await,
        ["dest_domain=a.test", r"url_regex=\.iso$"]
    );
    let (_, page) = console.get("/configure/routing/rules/import").await;
    assert!(
        page.contains(
            "dest_domain=a.test parent=&#34;p1:3128;&#34; round_robin=false go_direct=false"
        ),
        "the rules in force are the starting text: {page}"
    );
    assert_eq!(console.reloads(), 1);
}

#[tokio::test]
async fn a_rule_change_says_when_the_proxy_is_down_or_refuses_it() {
    let stopped = console(false).await;
    let (status, page) = stopped
        .post_owned("/configure/routing/rules", &stopped.rule_form("1"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(
            "Saved as version 2, but the proxy is not running. It will start with this version."
        ),
        "{page}"
    );
    let running = console(true).await;
    *running.proxy.refuse.lock().unwrap() = Some("rule 1: parent p1:3128 is this proxy".to_owned());
    let (status, page) = running
        .post_owned("/configure/routing/rules", &running.rule_form("1"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(
            "Version 2 was saved but rejected by the proxy: rule 1: parent p1:3128 is this proxy. \
             Nothing changed: version 1 is still in force."
        ),
        "{page}"
    );
}

#[tokio::test]
async fn the_dashboard_shows_what_canopy_run_restarted() {
    let console = console(false).await;
    let state = canopy_config::supervision::State {
        pid: std::process::id(),
        processes: vec![
            canopy_config::supervision::ProcessState {
                name: "canopy-proxy".into(),
                pid: None,
                restarts: 2,
                last_exit: Some("was killed by signal 9".into()),
            },
            canopy_config::supervision::ProcessState {
                name: "canopy-manager".into(),
                pid: Some(4243),
                restarts: 0,
                last_exit: None,
            },
        ],
    };
    state.write(console.dir.path()).unwrap();
    let (_, dashboard) = console.get("/").await;
    assert!(
        dashboard.contains(
            "canopy-proxy: waiting to be restarted, restarts 2 (last: was killed by signal 9)"
        ),
        "{dashboard}"
    );
    assert!(
        dashboard.contains("canopy-manager: running, pid 4243, restarts 0"),
        "{dashboard}"
    );
}

impl Console {
    /// Version 2 (ICP port 3131 and a peer "from-v2") rejected by the proxy, version 1 in
    /// force, as the proxy marks them.
    async fn rejected_version_2(&self) {
        let db = &self.db;
        db.mark(1, VersionState::Applied, None).await.unwrap();
        let mut config = db.latest().await.unwrap().config;
        config.set("icp_port", "3131").unwrap();
        let peer = serde_json::json!({
            "name": "from-v2", "host": "10.0.0.7", "type": "sibling",
            "http_port": 3128, "icp_port": 3130,
        });
        config.peers.push(serde_json::from_value(peer).unwrap());
        let v2 = db.save_change(&config, "bob", Some(1)).await.unwrap();
        db.mark(v2, VersionState::Rejected, Some(TAKEN))
            .await
            .unwrap();
    }
}

const TAKEN: &str = "cannot listen on 127.0.0.1:3131 for ICP: Address already in use";

#[tokio::test]
async fn a_rejected_version_is_shown_on_every_edit_page_and_opened_fixed_and_applied() {
    let console = console(true).await;
    console.rejected_version_2().await;
    for path in [
        "/configure/routing",
        "/configure/routing/rules/new",
        "/configure/routing/rules/import",
        "/configure/peers",
        "/configure/peers/new",
        "/configure/icp",
        "/configure/timeouts",
    ] {
        let (status, page) = console.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            page.contains(&format!(
                "Version 2 was rejected: {TAKEN}. This form shows version 1, the one in force"
            )),
            "{path}: {page}"
        );
        assert!(
            page.contains(&format!("href=\"{path}?rejected=2\"")),
            "{path}: {page}"
        );
        assert!(
            page.contains("action=\"/configure/history/2/discard\""),
            "{path}: {page}"
        );
        if path != "/configure/peers" {
            assert_eq!(hidden(&page, "based_on"), "1", "{path}");
        }
    }
    let (_, dashboard) = console.get("/").await;
    assert!(
        dashboard.contains(&format!("Version 2 was rejected by the proxy: {TAKEN}")),
        "{dashboard}"
    );
    assert!(dashboard.contains("href=\"/configure/routing?rejected=2\""));
    let (_, peers) = console.get("/configure/peers").await;
    assert!(!peers.contains("from-v2"), "the version in force is shown");

    let (_, peers) = console.get("/configure/peers?rejected=2").await;
    assert!(peers.contains("from-v2"), "{peers}");
    assert!(
        peers.contains("href=\"/configure/peers/from-v2?rejected=2\""),
        "{peers}"
    );
    let (status, routing) = console.get("/configure/routing?rejected=2").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        routing.contains(&format!(
            "This form shows rejected version 2, reason: {TAKEN}. It is not version 1"
        )),
        "{routing}"
    );
    assert_eq!(hidden(&routing, "based_on"), "1");
    assert_eq!(hidden(&routing, "rejected"), "2");
    let (status, icp) = console.get("/configure/icp?rejected=2").await;
    assert_eq!(status, StatusCode::OK);
    assert!(icp.contains("value=\"3131\""), "{icp}");
    assert_eq!(hidden(&icp, "rejected"), "2");

    console.proxy.in_force.store(2, Ordering::SeqCst);
    let icp_form = console.settings_form(Group::Icp, "1", &Config::default());
    let fixed = with(with(icp_form, "rejected", "2"), "icp_port", "3132");
    let (status, page) = console.post_owned("/configure/icp", &fixed).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Applied: version 3 is in force"), "{page}");
    assert!(!page.contains("was rejected"), "{page}");
    let v3 = console.db.get(3).await.unwrap();
    assert_eq!(v3.config.icp_port, 3132);
    assert_eq!(v3.config.peers[0].name, "from-v2", "built on version 2");
    assert_eq!(console.db.in_force().await.unwrap().id, 3);

    let (status, page) = console.post_owned("/configure/icp", &fixed).await;
    assert_eq!(status, StatusCode::CONFLICT, "{page}");
    let again = with(fixed, "based_on", "3");
    let (status, page) = console.post_owned("/configure/icp", &again).await;
    assert_eq!(status, StatusCode::CONFLICT, "{page}");
    assert!(
        page.contains("rejected version 2, which is no longer waiting to be fixed"),
        "{page}"
    );
    assert_eq!(console.latest_id().await, 3);
}

#[tokio::test]
async fn a_discarded_version_stays_in_the_history_and_its_notice_is_gone() {
    let console = console(true).await;
    console.rejected_version_2().await;
    let (status, page) = console
        .post("/configure/history/2/discard", &[("csrf", &console.csrf)])
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Version 2 is discarded"), "{page}");
    assert!(
        page.contains("<span class=\"badge discarded\">discarded</span>"),
        "{page}"
    );
    for path in ["/configure/routing", "/configure/peers", "/"] {
        let (_, page) = console.get(path).await;
        assert!(!page.contains("was rejected"), "{path}: {page}");
    }
    let (_, icp) = console.get("/configure/icp?rejected=2").await;
    assert!(icp.contains("value=\"3130\""), "not opened: {icp}");
    assert_eq!(console.db.latest().await.unwrap().id, 1, "never applied");
    let (status, page) = console
        .post("/configure/history/2/discard", &[("csrf", &console.csrf)])
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        page.contains("Nothing was discarded: version 2 is discarded"),
        "{page}"
    );
    let (status, _) = console
        .post("/configure/history/9/discard", &[("csrf", &console.csrf)])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_rule_added_to_an_opened_version_is_built_on_it() {
    let console = console(true).await;
    console.rejected_version_2().await;
    let (_, page) = console.get("/configure/routing/rules/new?rejected=2").await;
    assert_eq!(hidden(&page, "rejected"), "2", "{page}");
    console.proxy.in_force.store(2, Ordering::SeqCst);
    let rule = with(console.rule_form("1"), "rejected", "2");
    let (status, page) = console.post_owned("/configure/routing/rules", &rule).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Applied: version 3 is in force"), "{page}");
    let v3 = console.db.get(3).await.unwrap().config;
    assert_eq!(v3.icp_port, 3131, "version 2's settings");
    assert_eq!(v3.peers[0].name, "from-v2");
    assert_eq!(v3.parent_rules[0].matcher(), "dest_domain=a.test");
}

#[tokio::test]
async fn every_setting_is_on_its_group_s_page_with_its_help_value_and_default() {
    let console = console(true).await;
    let (_, dashboard) = console.get("/").await;
    let on_pages: usize = Group::ALL.iter().map(|g| g.settings().count()).sum();
    assert_eq!(on_pages, SETTINGS.len(), "every setting is on a page");
    for group in Group::ALL {
        let path = group_path(group);
        assert!(
            dashboard.contains(&format!("href=\"{path}\"")),
            "{path} in the menu"
        );
        let (status, page) = console.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            page.contains(&format!("<h1>{}</h1>", group.title())),
            "{path}"
        );
        for setting in group.settings() {
            let key = setting.key;
            let at = page
                .find(&format!("<label for=\"{key}\">"))
                .unwrap_or_else(|| panic!("{path}: no field {key}"));
            let field = &page[at..];
            let field = &field[..field.find("</div>").unwrap()];
            let help = setting
                .help
                .split('`')
                .next()
                .unwrap()
                .replace('\'', "&#39;");
            assert!(field.contains(help.trim_end()), "{key}: its help\n{field}");
            assert!(
                field.contains("Default: <code>"),
                "{key}: its default\n{field}"
            );
        }
    }
    let (_, proxy) = console.get("/configure/proxy").await;
    assert!(
        proxy.contains(">127.0.0.0/8\n::1/128\n10.0.0.0/8\n"),
        "allowed_clients one per line: {proxy}"
    );
    assert!(proxy.contains("id=\"http_port\" name=\"http_port\" value=\"3128\""));
    let (status, _) = console.get("/configure/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn each_settings_page_saves_what_it_shows_as_one_version() {
    let console = console(true).await;
    let changes = [
        (
            Group::Proxy,
            "allowed_clients",
            "10.1.0.0/16\r\n192.168.5.5\n",
            "10.1.0.0/16, 192.168.5.5/32",
        ),
        (Group::Proxy, "deny_to_localhost", "true", "true"),
        (Group::Cache, "cache_mem", "512M", "512M"),
        (Group::Routing, "never_direct", "true", "true"),
        (
            Group::Icp,
            "icp_allowed_clients",
            "10.9.0.0/16",
            "10.9.0.0/16",
        ),
        (Group::Timeouts, "read_timeout_ms", "30000", "30000"),
        (Group::Logging, "access_log", "", ""),
        (
            Group::Console,
            "manager_hosts",
            "console.example.com\ncanopy",
            "console.example.com, canopy",
        ),
    ];
    for (version, (group, key, posted, saved)) in (2..).zip(changes) {
        let before = console.db.latest().await.unwrap().config;
        let form = console.settings_form(group, &(version - 1).to_string(), &before);
        let (status, page) = console
            .post_owned(group_path(group), &with(form, key, posted))
            .await;
        assert_eq!(status, StatusCode::OK, "{key}: {page}");
        assert!(
            page.contains(&format!("Applied: version {version} is in force")),
            "{key}: {page}"
        );
        let after = console.db.latest().await.unwrap().config;
        assert_eq!(after.get(key).unwrap(), saved, "{key}");
        assert_eq!(
            after.diff(&before).len(),
            1,
            "{key}: {:?}",
            after.diff(&before)
        );
    }
    let config = console.db.latest().await.unwrap().config;
    let unticked = console.settings_form(Group::Proxy, "9", &Config::default());
    let (status, _) = console.post_owned("/configure/proxy", &unticked).await;
    assert_eq!(status, StatusCode::OK);
    let after = console.db.latest().await.unwrap().config;
    assert!(!after.deny_to_localhost.0, "a box left unticked is off");
    assert!(config.deny_to_localhost.0);
}

#[tokio::test]
async fn a_bad_value_is_shown_under_its_field_with_the_value_in_force() {
    let console = console(true).await;
    let form = console.settings_form(Group::Cache, "1", &Config::default());
    // With the disk cache off, an object may be no larger than the memory cache.
    let form = with(form, "cache_dir_size", "0");
    let form = with(with(form, "cache_mem", "64M"), "max_object_size", "100M");
    let page = console
        .refused_beside(
            "/configure/cache",
            &form,
            "max_object_size",
            "100M",
            "must not be larger than cache_mem",
        )
        .await;
    assert!(page.contains("value=\"100M\""), "the posted value is kept");
    assert!(page.contains("In force: <code>8M</code>"), "{page}");
    let form = console.settings_form(Group::Proxy, "1", &Config::default());
    let form = with(with(form, "http_port", "70000"), "bind_address", "here");
    let page = console
        .refused_beside(
            "/configure/proxy",
            &form,
            "http_port",
            "70000",
            "&#34;70000&#34;: expected a port number from 1 to 65535",
        )
        .await;
    assert!(
        page.contains("is not an IP address"),
        "both errors are shown"
    );
}

#[tokio::test]
async fn a_new_console_address_is_given_as_a_link_once_applied() {
    let console = console(true).await;
    let form = console.settings_form(Group::Console, "1", &Config::default());
    let request = Request::post("/configure/console")
        .header(header::COOKIE, &console.cookie)
        .header(header::HOST, "192.0.2.7:8080")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(encode(
            &with(form, "manager_listen", "0.0.0.0:9090")
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )))
        .unwrap();
    let response = console.send(request).await;
    let page = body_text(response).await;
    assert!(
        page.contains("it listens at <a href=\"http://192.0.2.7:9090/configure/console\">"),
        "{page}"
    );
}

#[tokio::test]
async fn the_clients_page_shows_who_asked_what_it_was_answered_and_who_was_denied() {
    let console = console(true).await;
    let (status, page) = console.get("/monitor/clients").await;
    assert_eq!(status, StatusCode::OK);
    let child = page.find("127.0.0.2").expect("the child's row");
    let row = &page[child..];
    assert!(
        row.contains("peer <a href=\"/monitor/peers/squid\">squid</a>"),
        "{page}"
    );
    for figure in [">314<", ">100<", ">214<", ">97<", ">96<", "3.0 MiB"] {
        assert!(row.contains(figure), "{figure} in {page}");
    }
    assert!(
        page.contains("answered DENIED") && page.contains("127.0.0.3 (75)"),
        "{page}"
    );
    let (_, peers) = console.get("/monitor/peers").await;
    assert!(peers.contains("href=\"/monitor/clients\""), "{peers}");
    let (_, metrics) = console.get("/metrics").await;
    assert!(
        metrics
            .contains("canopy_client_icp_answers_total{client=\"127.0.0.3\",opcode=\"DENIED\"} 75"),
        "{metrics}"
    );
}

/// The markup of the form field `key`: from its `<div class="field…">` to the next one.
fn field_markup<'a>(page: &'a str, key: &str) -> &'a str {
    let label = page
        .find(&format!("<label for=\"{key}\""))
        .unwrap_or_else(|| panic!("no field {key} in {page}"));
    let start = page[..label].rfind("<div class=\"field").unwrap();
    let end = page[label..]
        .find("<div class=\"field")
        .map_or(page.len(), |i| label + i);
    &page[start..end]
}

#[tokio::test]
async fn a_peer_s_errors_are_shown_under_the_field_they_concern() {
    let console = console(true).await;
    let peer = |host: &str, http_port: &str| {
        vec![
            ("csrf", console.csrf.clone()),
            ("based_on", "1".to_owned()),
            ("original", String::new()),
            ("name", "squid".to_owned()),
            ("host", host.to_owned()),
            ("type", "sibling".to_owned()),
            ("http_port", http_port.to_owned()),
            ("icp_port", "3130".to_owned()),
            ("weight", "1".to_owned()),
        ]
    };
    for (host, http_port, message) in [
        ("no such host!", "3128", "expected a host name or address"),
        ("127.0.0.1", "3128", "own listener (http_port)"),
    ] {
        let (status, page) = console
            .post_owned("/configure/peers", &peer(host, http_port))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{host}: {page}");
        assert!(
            field_markup(&page, "host").contains(message),
            "{host}: {message} under Host: {page}"
        );
        assert!(
            !field_markup(&page, "name").contains("class=\"error\""),
            "{host}: nothing under Name: {page}"
        );
    }
    assert_eq!(console.latest_id().await, 1);
}

#[tokio::test]
async fn a_restore_is_done_only_from_its_confirmation_step() {
    let console = console(true).await;
    console
        .post_owned("/configure/routing", &console.routing_form("1"))
        .await;
    let (_, history) = console.get("/configure/history").await;
    assert!(
        history.contains("href=\"/configure/history/1/restore\""),
        "the list links to the step: {history}"
    );
    let unconfirmed = [("csrf", console.csrf.as_str()), ("based_on", "2")];
    let response = console
        .post_only("/configure/history/1/restore", &unconfirmed)
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()[header::LOCATION],
        "/configure/history/1/restore"
    );
    assert_eq!(console.latest_id().await, 2, "nothing restored");
    let (status, step) = console.get("/configure/history/1/restore").await;
    assert_eq!(status, StatusCode::OK);
    assert!(step.contains("Restore version 1?"), "{step}");
    assert!(
        step.contains("parents: parent1:3128; parent2:8080; → "),
        "{step}"
    );
    assert_eq!(hidden(&step, "confirm"), "yes");
    assert_eq!(console.latest_id().await, 2, "the step restores nothing");

    let confirmed = [
        ("csrf", console.csrf.as_str()),
        ("based_on", "2"),
        ("confirm", "yes"),
    ];
    let response = console
        .post_only("/configure/history/1/restore", &confirmed)
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/configure/history");
    assert_eq!(console.latest_id().await, 3);
    let (_, page) = console.get("/configure/history").await;
    assert!(page.contains("Applied: version 3"), "{page}");
    let (_, again) = console.get("/configure/history").await;
    assert!(!again.contains("Applied: version 3"), "shown once: {again}");
}

#[tokio::test]
async fn every_change_answers_303_to_a_page_that_says_what_happened() {
    let console = console(true).await;
    let routing = console.routing_form("1");
    let routing: Vec<(&str, &str)> = routing.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = console.post_only("/configure/routing", &routing).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/configure/routing");
    assert_eq!(body_text(response).await, "");
    let (status, page) = console.get("/configure/routing").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Applied: version 2"), "{page}");
    let (_, again) = console.get("/configure/routing").await;
    assert!(!again.contains("Applied"), "a refresh shows it no more");
    assert_eq!(console.latest_id().await, 2);

    let use_form = [("csrf", console.csrf.as_str()), ("action", "down")];
    let response = console
        .post_only("/monitor/peers/127.0.0.1:3999/use", &use_form)
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()[header::LOCATION].to_str().unwrap();
    let (_, page) = console.get(location).await;
    assert!(page.contains("127.0.0.1:3999 is down"), "{page}");
}

#[tokio::test]
async fn a_rule_button_keeps_what_was_typed_in_the_routing_form() {
    let console = console(true).await;
    let rule = console.rule_form("1");
    console.post_owned("/configure/routing/rules", &rule).await;
    assert_eq!(console.latest_id().await, 2);
    let mut form = console.routing_form("2");
    form.push(("form", "routing".to_owned()));
    let form = with(form, "parents", "typed-before-removing:3128;");
    let (status, page) = console
        .post_owned("/configure/routing/rules/1/remove", &form)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Applied: version 3"), "{page}");
    let config = console.db.latest().await.unwrap().config;
    assert!(config.parent_rules.is_empty());
    assert_eq!(config.parents.to_string(), "typed-before-removing:3128;");
}

#[tokio::test]
async fn unknown_pages_peers_and_versions_are_404_in_the_console_s_frame() {
    let console = console(true).await;
    for (path, says) in [
        ("/no/such/page", "The console has no page at /no/such/page."),
        (
            "/monitor/peers/nobody",
            "There is no peer called &#34;nobody&#34;.",
        ),
        ("/configure/history/99", "There is no config version 99."),
        (
            "/configure/history/99/restore",
            "There is no config version 99.",
        ),
    ] {
        let (status, page) = console.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(page.contains(says), "{path}: {page}");
        assert!(page.contains("<h1>Not found</h1>"), "{path}: {page}");
        assert!(page.contains("/static/canopy.css"), "{path}: styled");
        assert!(page.contains("Log out"), "{path}: in the frame");
    }
    // Without a login, a bare 404: no login page whose cookie would replace the one of the
    // login form the browser shows beside it.
    let response = console
        .send(Request::get("/favicon.ico").body(Body::empty()).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(set_cookie(&response, "canopy_login").is_none());
}
