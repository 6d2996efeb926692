//! Every group of settings changed from the console, end to end: a real proxy, the real
//! console following `manager_listen`, an administrator who logs in and posts each page's
//! form as a browser would, then the change seen in force (the proxy's behaviour, or
//! `canopy config list` of the version in force).

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use canopy_config::config::{Control, Group};
use canopy_config::versions::Db;
use canopy_manager::accounts;
use common::console::{cookie, encode_form, hidden_input};
use common::*;

const PASSWORD: &str = "a long enough password";

/// The console of `proxy`'s data dir, where the version in force says (no `--listen`).
fn console_of(proxy: &Canopy) -> Child {
    let log = std::fs::File::create(proxy.data_dir().join("manager.log")).expect("log");
    Command::new(binary("canopy-manager"))
        .arg("--db")
        .arg(proxy.data_dir().join("canopy.db"))
        .arg("--control")
        .arg(proxy.control_path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start canopy-manager")
}

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An administrator logged in to the console at `addr`.
struct Admin {
    addr: SocketAddr,
    session: String,
}

/// One request to the console at `addr`, with `cookie`, and `form` as its body when given.
async fn send(addr: SocketAddr, path: &str, cookie: &str, form: Option<String>) -> Fetched {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let builder = Request::builder()
        .method(if form.is_some() { "POST" } else { "GET" })
        .uri(path)
        .header("host", addr.to_string())
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded");
    let request = builder
        .body(Full::new(Bytes::from(form.unwrap_or_default())))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    Fetched {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

impl Admin {
    async fn log_in(proxy: &Canopy, addr: SocketAddr) -> Admin {
        let db = Db::open(&proxy.data_dir().join("canopy.db"))
            .await
            .expect("db");
        accounts::set_password(&db, "admin", PASSWORD)
            .await
            .expect("account");
        let form = send(addr, "/login", "", None).await;
        let login = cookie(&form, "canopy_login");
        let fields = [
            ("csrf", hidden_input(&form.text(), "csrf")),
            ("user", "admin".to_owned()),
            ("password", PASSWORD.to_owned()),
        ];
        let answer = send(addr, "/login", &login, Some(encode_form(&fields))).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
        Admin {
            addr,
            session: cookie(&answer, "canopy_session"),
        }
    }

    /// Make These Changes on `group`'s page with `key` set to `value` and every other field
    /// as the page shows it (the version in force): the page answered.
    async fn change(&self, proxy: &Canopy, group: Group, key: &str, value: &str) -> Fetched {
        let path = format!("/configure/{}", group.slug());
        let page = send(self.addr, &path, &self.session, None).await.text();
        let db = Db::open(&proxy.data_dir().join("canopy.db"))
            .await
            .expect("db");
        let config = db.in_force().await.expect("in force").config;
        let mut form = vec![
            ("csrf", hidden_input(&page, "csrf")),
            ("based_on", hidden_input(&page, "based_on")),
        ];
        for setting in group.settings() {
            let shown = if setting.key == key {
                value.to_owned()
            } else {
                config.get(setting.key).expect("setting")
            };
            match setting.control {
                Control::Checkbox if shown == "false" => {}
                Control::List => form.push((setting.key, shown.replace(", ", "\n"))),
                _ => form.push((setting.key, shown)),
            }
        }
        let answer = send(self.addr, &path, &self.session, Some(encode_form(&form))).await;
        // A page that redirects after a change is followed, as a browser does.
        if answer.status == StatusCode::SEE_OTHER {
            return send(self.addr, answer.header("location"), &self.session, None).await;
        }
        answer
    }
}

/// `key` as `canopy config list` shows the version in force.
fn listed(proxy: &Canopy, key: &str) -> String {
    let list = proxy.cli(&["config", "list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    stdout(&list)
        .lines()
        .find_map(|line| {
            let (k, v) = line.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no {key} in {}", stdout(&list)))
}

/// A proxy, its console on a free port, and an administrator logged in to it.
async fn proxy_and_console() -> (Canopy, Stop, Admin) {
    let first: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let proxy = Canopy::start(&[("manager_listen", &first.to_string())]).await;
    let console = Stop(console_of(&proxy));
    wait_for("the console", Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(first).await.is_ok()
    })
    .await;
    let admin = Admin::log_in(&proxy, first).await;
    (proxy, console, admin)
}

async fn in_force(proxy: &Canopy) -> i64 {
    proxy.status().await.expect("status").config_version
}

#[tokio::test]
async fn one_setting_of_each_group_changed_in_the_console_is_in_force() {
    let origin = Origin::start(|_| hyper::Response::new(full("from the origin"))).await;
    let (proxy, _console, admin) = proxy_and_console().await;
    let start = in_force(&proxy).await;

    let port = free_port();
    let page = admin
        .change(&proxy, Group::Proxy, "http_port", &port.to_string())
        .await;
    let applied = format!("Applied: version {} is in force", start + 1);
    assert!(page.text().contains(&applied), "{}", page.text());
    let moved = SocketAddr::from(([127, 0, 0, 1], port));
    let served = request_via(moved, None, "GET", &origin.url("/a"), &[])
        .await
        .expect("the proxy on its new port");
    assert_eq!(served.text(), "from the origin");

    let changes = [
        (Group::Cache, "cache_mem", "64M"),
        (Group::Routing, "retry_time_s", "120"),
        (Group::Icp, "icp_allowed_clients", "10.9.0.0/16\n127.0.0.9"),
        (Group::Timeouts, "read_timeout_ms", "30000"),
        (Group::Logging, "access_log", "console.log"),
    ];
    for (version, (group, key, value)) in (start + 2..).zip(changes) {
        let page = admin.change(&proxy, group, key, value).await;
        assert_eq!(page.status, StatusCode::OK, "{key}");
        assert!(
            page.text()
                .contains(&format!("Applied: version {version} is in force")),
            "{key}: {}",
            page.text()
        );
        assert_eq!(in_force(&proxy).await, version);
    }
    assert_eq!(listed(&proxy, "cache_mem"), "64M");
    assert_eq!(listed(&proxy, "retry_time_s"), "120");
    assert_eq!(
        listed(&proxy, "icp_allowed_clients"),
        "10.9.0.0/16, 127.0.0.9/32"
    );
    assert_eq!(listed(&proxy, "read_timeout_ms"), "30000");
    request_via(moved, None, "GET", &origin.url("/logged"), &[])
        .await
        .expect("a request");
    let log = proxy.data_dir().join("console.log");
    wait_for("the new access log", Duration::from_secs(10), || async {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("/logged"))
    })
    .await;

    let next: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let page = admin
        .change(&proxy, Group::Console, "manager_listen", &next.to_string())
        .await;
    assert!(
        page.text().contains(&format!(
            "it listens at <a href=\"http://{next}/configure/console\">"
        )),
        "{}",
        page.text()
    );
    wait_for(
        "the console at its new address",
        Duration::from_secs(10),
        || async { tokio::net::TcpStream::connect(next).await.is_ok() },
    )
    .await;
    let there = send(next, "/configure/console", &admin.session, None).await;
    assert_eq!(there.status, StatusCode::OK, "the session goes on there");
}

#[tokio::test]
async fn a_bad_value_is_shown_under_its_field_and_the_old_one_stays_in_force() {
    let (proxy, _console, admin) = proxy_and_console().await;
    let before = in_force(&proxy).await;
    let page = admin
        .change(&proxy, Group::Timeouts, "connect_timeout_ms", "0")
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    let text = page.text();
    let field = text.find("id=\"connect_timeout_ms\"").expect("the field");
    let under = &text[field..text[field..].find("</div>").expect("end") + field];
    assert!(
        under.contains("<p class=\"error\">&#34;0&#34;: expected 1 to 600000 milliseconds</p>"),
        "{under}"
    );
    assert!(under.contains("In force: <code>5000</code>"), "{under}");
    assert!(text.contains("Nothing was saved"));
    assert_eq!(in_force(&proxy).await, before);
    assert_eq!(listed(&proxy, "connect_timeout_ms"), "5000");
}

/// The error shown under the field `key` of a page, if any, as the browser shows it.
fn error_under(page: &str, key: &str) -> Option<String> {
    let field = page.find(&format!("id=\"{key}\""))?;
    let under = &page[field..field + page[field..].find("</div>")?];
    let start = under.find("<p class=\"error\">")? + "<p class=\"error\">".len();
    let error = &under[start..start + under[start..].find("</p>")?];
    Some(error.replace("&#34;", "\"").replace("&#39;", "'"))
}

/// HTCP's port and both access lists from the ICP page: each bad value refused under its
/// field with what was expected, nothing applied; good ones in force (a TST is answered).
#[tokio::test]
async fn htcp_port_and_access_lists_are_set_in_the_console_with_clear_errors() {
    use canopy_proxy::htcp::codec::{HtcpLayout, HtcpMessage, ResponseCode, Specifier};
    let (proxy, _console, admin) = proxy_and_console().await;
    let before = in_force(&proxy).await;
    let icp_port = listed(&proxy, "icp_port");
    let same_as_icp = format!("expected 0 (off) or a UDP port other than icp_port's ({icp_port})");
    let refused = [
        ("htcp_port", icp_port.as_str(), same_as_icp.as_str()),
        ("htcp_port", "70000", "70000"),
        ("htcp_access", "10.0.0.0/33", "10.0.0.0/33"),
        ("htcp_clr_access", "not-an-address", "not-an-address"),
    ];
    for (key, value, said) in refused {
        let page = admin.change(&proxy, Group::Icp, key, value).await;
        assert_eq!(
            page.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{key} {value}"
        );
        let error = error_under(&page.text(), key)
            .unwrap_or_else(|| panic!("no error under {key}: {}", page.text()));
        assert!(error.contains(said), "{key} {value}: {error}");
        assert_eq!(in_force(&proxy).await, before, "{key} {value}");
    }

    let port = free_udp_port();
    for (key, value) in [
        ("htcp_port", port.to_string()),
        ("htcp_access", "127.0.0.1".to_owned()),
        ("htcp_clr_access", "127.0.0.0/8".to_owned()),
    ] {
        let page = admin.change(&proxy, Group::Icp, key, &value).await;
        assert_eq!(page.status, StatusCode::OK, "{key}: {}", page.text());
        assert!(page.text().contains("Applied: version"), "{key}");
    }
    assert_eq!(in_force(&proxy).await, before + 3);
    assert_eq!(listed(&proxy, "htcp_access"), "127.0.0.1/32");
    assert_eq!(listed(&proxy, "htcp_clr_access"), "127.0.0.0/8");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let query =
        HtcpMessage::tst_query(HtcpLayout::Rfc, 3, Specifier::get("http://a.test/", vec![]));
    socket
        .send_to(&query.encode().unwrap(), ("127.0.0.1", port))
        .await
        .unwrap();
    let mut buffer = [0; 2048];
    let (len, _) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buffer))
        .await
        .expect("a TST answered on the new port")
        .unwrap();
    let reply = HtcpMessage::decode(&buffer[..len]).unwrap();
    assert_eq!(
        (reply.msg_id, reply.response),
        (3, ResponseCode::TST_NOT_FOUND)
    );
}
