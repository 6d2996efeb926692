//! Accounts and roles, end to end against the real `canopy-manager` (and `canopy-proxy`)
//! processes: a monitor sees every page and every state-changing route refuses it; an
//! administrator adds and removes accounts from the console and from `canopy admin`; the last
//! administrator stays; a demoted administrator loses its rights on its next request; the
//! console's "Purge a URL" purges.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Output;

use hyper::{Response, StatusCode};

use common::console::{set_cookie, Console};
use common::{
    canopy_cli, canopy_cli_with_stdin, full, stderr, stdout, Canopy, Fetched, Origin, OriginBody,
    Seen,
};

const ADMIN_PASSWORD: &str = "the administrator's password";
const MONITOR_PASSWORD: &str = "the monitor's password";
const FROM: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A browser's session: its cookie and the CSRF token its forms carry.
struct LoggedIn {
    cookie: String,
    csrf: String,
}

/// The value of the first hidden field called `name`.
fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in {body}"))
        + marker.len();
    body[start..start + body[start..].find('"').expect("end of value")].to_owned()
}

fn encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let value: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={value}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Asserts an answer's status and that its page says `text`.
fn says(answer: &Fetched, status: StatusCode, text: &str) {
    let page = answer.text();
    assert_eq!(answer.status, status, "{page}");
    assert!(page.contains(text), "{text:?} is not in {page}");
}

/// Logs in through the login form; `None` when the console refuses the password.
async fn try_log_in(console: &Console, user: &str, password: &str) -> Option<LoggedIn> {
    let form = console
        .request(FROM, "GET", "/login", &[], "")
        .await
        .expect("the login form");
    let login_cookie = set_cookie(&form, "canopy_login").expect("a login cookie");
    let body = encode(&[
        ("csrf", &hidden(&form.text(), "csrf")),
        ("user", user),
        ("password", password),
    ]);
    let answer = console
        .request(
            FROM,
            "POST",
            "/login",
            &[
                ("cookie", &login_cookie),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            &body,
        )
        .await
        .expect("the login answer");
    let cookie = set_cookie(&answer, "canopy_session")?;
    let mut session = LoggedIn {
        cookie,
        csrf: String::new(),
    };
    let page = get(console, &session, "/").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    session.csrf = hidden(&page.text(), "csrf");
    Some(session)
}

async fn log_in(console: &Console, user: &str, password: &str) -> LoggedIn {
    try_log_in(console, user, password)
        .await
        .unwrap_or_else(|| panic!("{user} could not log in"))
}

async fn get(console: &Console, session: &LoggedIn, path: &str) -> Fetched {
    console
        .request(FROM, "GET", path, &[("cookie", &session.cookie)], "")
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Posts a form with the session's CSRF token added.
async fn post(
    console: &Console,
    session: &LoggedIn,
    path: &str,
    fields: &[(&str, &str)],
) -> Fetched {
    let mut all = vec![("csrf", session.csrf.as_str())];
    all.extend_from_slice(fields);
    console
        .request(
            FROM,
            "POST",
            path,
            &[
                ("cookie", &session.cookie),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            &encode(&all),
        )
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// Runs `canopy admin ARGS` on `data_dir` with `stdin`.
fn admin(data_dir: &Path, args: &[&str], stdin: &str) -> Output {
    let all: Vec<&str> = ["admin"].iter().chain(args).copied().collect();
    canopy_cli_with_stdin(data_dir, &all, stdin)
}

/// A route of the console as its source declares it: the path and the methods it answers.
#[derive(Debug)]
struct Route {
    path: String,
    methods: Vec<&'static str>,
}

/// Every `.route(...)` in the console's source, so that a route added later is checked too.
fn console_routes() -> Vec<Route> {
    fn sources(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("manager sources") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(std::fs::read_to_string(&path).expect("a source file"));
            }
        }
    }
    let mut texts = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("manager/src"),
        &mut texts,
    );
    let mut routes = Vec::new();
    for text in &texts {
        for chunk in text.split(".route(").skip(1) {
            let declaration = chunk.split(".layer(").next().unwrap_or(chunk);
            let Some(path) = declaration.split('"').nth(1) else {
                continue;
            };
            let methods = ["get", "post", "put", "patch", "delete"]
                .into_iter()
                .filter(|m| declaration.contains(&format!("{m}(")))
                .collect();
            routes.push(Route {
                path: path.to_owned(),
                methods,
            });
        }
    }
    assert!(
        routes.iter().any(|r| r.path == "/configure/routing"),
        "the console's routes were not found: {routes:?}"
    );
    routes
}

/// A route's path with each `{parameter}` filled with something that exists.
fn concrete(path: &str) -> String {
    path.replace("{node}", &canopy_config::nodes::default_node_name())
        .replace("{name}", "squid")
        .replace("{number}", "1")
        .replace("{id}", "1")
        .replace("{group}", "proxy")
}

/// A proxy and its console, with an ICP peer `squid`, a routing rule, an administrator
/// `admin` and a monitor `watcher`, added with `canopy admin`.
async fn console_with_a_monitor() -> (Canopy, Console) {
    let proxy = Canopy::start(&[]).await;
    let console = Console::beside(&proxy, "admin", ADMIN_PASSWORD).await;
    for args in [
        &["peer", "add", "squid", "127.0.0.2", "--type", "parent"][..],
        &[
            "rule",
            "add",
            "--dest-domain",
            "example.com",
            "--parents",
            "127.0.0.3:3128",
        ],
    ] {
        let done = canopy_cli(console.data_dir(), args);
        assert!(done.status.success(), "{args:?}: {}", stderr(&done));
    }
    let added = admin(
        console.data_dir(),
        &["add", "watcher", "--role", "monitor"],
        MONITOR_PASSWORD,
    );
    assert!(added.status.success(), "{}", stderr(&added));
    (proxy, console)
}

#[tokio::test]
async fn a_monitor_sees_every_page_and_every_change_is_refused() {
    let (_proxy, console) = console_with_a_monitor().await;
    let monitor = log_in(&console, "watcher", MONITOR_PASSWORD).await;
    let routes = console_routes();

    for route in routes.iter().filter(|r| r.methods.contains(&"get")) {
        let path = concrete(&route.path);
        let page = get(&console, &monitor, &path).await;
        let expected = match route.path.as_str() {
            "/login" => StatusCode::SEE_OTHER,
            _ => StatusCode::OK,
        };
        assert_eq!(page.status, expected, "GET {path}: {}", page.text());
        if page.header("content-type").starts_with("text/html") {
            let text = page.text();
            assert!(
                text.contains("id=\"read-only\"")
                    && text.contains("<fieldset class=\"read-only\" disabled>"),
                "GET {path} does not show a read-only page: {text}"
            );
        }
    }

    let versions_before = canopy_cli(console.data_dir(), &["config", "history"]);
    let mut refused = 0;
    for route in &routes {
        for method in route.methods.iter().filter(|m| **m != "get") {
            if matches!(route.path.as_str(), "/login" | "/logout") {
                continue;
            }
            let path = concrete(&route.path);
            let answer = match *method {
                "post" => {
                    post(
                        &console,
                        &monitor,
                        &path,
                        &[("based_on", "1"), ("role", "admin"), ("url", "http://x/")],
                    )
                    .await
                }
                other => console
                    .request(
                        FROM,
                        &other.to_uppercase(),
                        &path,
                        &[("cookie", &monitor.cookie)],
                        "",
                    )
                    .await
                    .expect("an answer"),
            };
            assert_eq!(
                answer.status,
                StatusCode::FORBIDDEN,
                "{method} {path} by a monitor: {}",
                answer.text()
            );
            assert!(
                answer
                    .text()
                    .contains("\"watcher\" is a monitor, which is read-only"),
                "{}",
                answer.text()
            );
            refused += 1;
        }
    }
    assert!(refused >= 10, "only {refused} state-changing routes found");
    let versions_after = canopy_cli(console.data_dir(), &["config", "history"]);
    assert_eq!(
        stdout(&versions_before),
        stdout(&versions_after),
        "a monitor changed the config"
    );
    let accounts = stdout(&admin(console.data_dir(), &["list"], ""));
    assert!(
        accounts
            .lines()
            .any(|l| l.starts_with("watcher ") && l.contains(" monitor ")),
        "{accounts}"
    );

    let logout = post(&console, &monitor, "/logout", &[]).await;
    assert_eq!(
        logout.status,
        StatusCode::SEE_OTHER,
        "a monitor may log out"
    );
}

#[tokio::test]
async fn an_admin_adds_and_removes_a_monitor_from_the_console() {
    let console = Console::start("admin", ADMIN_PASSWORD).await;
    let admin_session = log_in(&console, "admin", ADMIN_PASSWORD).await;
    let session = &admin_session;
    let fields = [("name", "watcher"), ("role", "monitor"), ("password", "")];
    let added = post(&console, session, "/configure/accounts", &fields).await;
    says(&added, StatusCode::OK, "Account watcher added, a monitor.");
    let page = added.text();
    let marker = "shown only\nthis once: <code>";
    let start = page.find(marker).expect("the generated password") + marker.len();
    let password = &page[start..start + page[start..].find('<').expect("end")];
    assert_eq!(password.len(), 20);
    let list = get(&console, &admin_session, "/configure/accounts").await;
    says(&list, StatusCode::OK, "<td>watcher</td>");
    assert!(
        !list.text().contains(password),
        "the password is shown once only"
    );

    let monitor = log_in(&console, "watcher", password).await;
    let seen = get(&console, &monitor, "/configure/accounts").await;
    says(&seen, StatusCode::OK, "id=\"read-only\"");

    let removed = post(&console, session, "/configure/accounts/watcher/remove", &[]).await;
    says(&removed, StatusCode::OK, "Account watcher removed");
    let after = get(&console, &monitor, "/").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "its session ended");
    assert_eq!(after.header("location"), "/login");
    assert!(try_log_in(&console, "watcher", password).await.is_none());

    let last = post(&console, session, "/configure/accounts/admin/remove", &[]).await;
    let why =
        "Nothing was changed: &#34;admin&#34; is the last administrator: it cannot be removed";
    says(&last, StatusCode::CONFLICT, why);
    let demoted = post(
        &console,
        session,
        "/configure/accounts/admin/role",
        &[("role", "monitor")],
    )
    .await;
    says(&demoted, StatusCode::CONFLICT, "cannot be made a monitor");
    let still = get(&console, &admin_session, "/").await;
    assert!(!still.text().contains("id=\"read-only\""));
}

#[tokio::test]
async fn a_demoted_administrator_loses_its_rights_on_its_next_request() {
    let console = Console::start("admin", ADMIN_PASSWORD).await;
    let first = log_in(&console, "admin", ADMIN_PASSWORD).await;
    let fields = [
        ("name", "second"),
        ("role", "admin"),
        ("password", "second's password"),
    ];
    let added = post(&console, &first, "/configure/accounts", &fields).await;
    says(
        &added,
        StatusCode::OK,
        "Account second added, an administrator.",
    );
    let second = log_in(&console, "second", "second's password").await;
    let promote_admin = [("role", "admin")];
    let allowed = post(
        &console,
        &second,
        "/configure/accounts/admin/role",
        &promote_admin,
    )
    .await;
    says(&allowed, StatusCode::OK, "admin is now an administrator");

    let demote = [("role", "monitor")];
    let demoted = post(&console, &first, "/configure/accounts/second/role", &demote).await;
    says(&demoted, StatusCode::OK, "second is now a monitor");
    let refused = post(
        &console,
        &second,
        "/configure/accounts/admin/role",
        &promote_admin,
    )
    .await;
    says(
        &refused,
        StatusCode::FORBIDDEN,
        "\"second\" is a monitor, which is read-only",
    );
    let page = get(&console, &second, "/configure/routing").await;
    says(&page, StatusCode::OK, "id=\"read-only\"");

    let promoted = admin(console.data_dir(), &["role", "second", "admin"], "");
    assert!(promoted.status.success(), "{}", stderr(&promoted));
    let allowed = post(
        &console,
        &second,
        "/configure/accounts/admin/role",
        &promote_admin,
    )
    .await;
    says(&allowed, StatusCode::OK, "admin is now an administrator");
}

#[tokio::test]
async fn canopy_admin_manages_accounts_and_keeps_the_last_administrator() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path();
    let ok = |out: &Output| assert!(out.status.success(), "{}", stderr(out));
    let refused = |out: &Output, says: &str| {
        assert_eq!(out.status.code(), Some(2), "{}", stdout(out));
        assert!(stderr(out).contains(says), "{}", stderr(out));
    };
    ok(&admin(
        data,
        &["set-password", "admin"],
        "the first password\n",
    ));
    let added = admin(
        data,
        &["add", "watcher", "--role", "monitor", "--generate-password"],
        "",
    );
    ok(&added);
    let said = stdout(&added);
    assert!(said.contains("Account watcher added, a monitor."), "{said}");
    let password = said
        .lines()
        .find_map(|l| l.strip_prefix("Password of watcher, shown only this once: "))
        .expect("the generated password")
        .to_owned();
    let db = canopy_config::versions::Db::open(&data.join("canopy.db"))
        .await
        .expect("db");
    assert!(
        canopy_manager::accounts::verify_password(&db, "watcher", &password)
            .await
            .expect("check")
    );

    let list = stdout(&admin(data, &["list"], ""));
    let lines: Vec<&str> = list.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("FAILED LOGINS"),
        "{list}"
    );
    assert!(
        lines[1].starts_with("admin ") && lines[1].contains("administrator"),
        "{list}"
    );
    assert!(
        lines[2].starts_with("watcher ")
            && lines[2].contains("monitor")
            && lines[2].contains("never"),
        "{list}"
    );

    refused(
        &admin(data, &["add", "watcher", "--role", "admin"], "a password\n"),
        "there is already an account named \"watcher\"",
    );
    refused(&admin(data, &["remove", "admin"], ""), "\"admin\" is the last administrator: it cannot be removed; make another account an administrator first; nothing was changed");
    refused(
        &admin(data, &["role", "admin", "monitor"], ""),
        "\"admin\" is the last administrator: it cannot be made a monitor",
    );
    refused(
        &admin(data, &["remove", "nobody"], ""),
        "there is no account named \"nobody\"",
    );
    let wrong_role = admin(data, &["role", "watcher", "root"], "");
    assert!(!wrong_role.status.success());
    assert!(
        stderr(&wrong_role).contains("role \"root\": expected admin or monitor"),
        "{}",
        stderr(&wrong_role)
    );

    ok(&admin(data, &["password", "watcher"], "a new password\n"));
    assert!(
        canopy_manager::accounts::verify_password(&db, "watcher", "a new password")
            .await
            .expect("check")
    );
    refused(
        &admin(data, &["password", "nobody"], "a new password\n"),
        "there is no account named \"nobody\"",
    );

    ok(&admin(data, &["role", "watcher", "admin"], ""));
    ok(&admin(data, &["remove", "admin"], ""));
    let list = stdout(&admin(data, &["list"], ""));
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(
        list.contains("watcher") && list.contains("administrator"),
        "{list}"
    );
}

async fn purge(console: &Console, session: &LoggedIn, url: &str) -> Fetched {
    post(console, session, "/cache/purge", &[("url", url)]).await
}

fn cacheable(_: &Seen) -> Response<OriginBody> {
    Response::builder()
        .header("cache-control", "max-age=300")
        .body(full("cached body"))
        .unwrap()
}

#[tokio::test]
async fn the_consoles_purge_turns_the_next_request_into_a_miss() {
    let origin = Origin::start(cacheable).await;
    let proxy = Canopy::start(&[]).await;
    let console = Console::beside(&proxy, "admin", ADMIN_PASSWORD).await;
    let admin_session = log_in(&console, "admin", ADMIN_PASSWORD).await;
    let url = origin.url("/page");
    proxy.get(&url).await;
    let hit = "HIT from canopy-under-test";
    assert_eq!(proxy.get(&url).await.header("x-cache"), hit);

    let dashboard = get(&console, &admin_session, "/").await;
    says(&dashboard, StatusCode::OK, "action=\"/cache/purge\"");
    let purged = purge(&console, &admin_session, &url).await;
    says(
        &purged,
        StatusCode::OK,
        &format!("Purged: {url} was removed from the cache."),
    );
    let miss = "MISS from canopy-under-test";
    assert_eq!(proxy.get(&url).await.header("x-cache"), miss);

    let absent = purge(&console, &admin_session, &origin.url("/never")).await;
    says(
        &absent,
        StatusCode::OK,
        "Not in cache: nothing was stored under",
    );
    let wrong = purge(&console, &admin_session, "ftp://example.com/").await;
    let why = "Not purged: &#34;ftp://example.com/&#34; is not an http:// URL.";
    says(&wrong, StatusCode::BAD_REQUEST, why);
    assert_eq!(proxy.stats().await.purges, 2);
}
