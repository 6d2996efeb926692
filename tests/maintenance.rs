//! Peers taken down by hand (`canopy peer down|up`, `canopy parent down|up`, the console's
//! Take down / Bring up), end to end: real `canopy-proxy` processes as the ICP sibling, the
//! ICP parent and the HTTP parent of a child, each counting what reaches it; the state kept
//! across a restart and a new config version, as Traffic Server keeps `traffic_ctl host down`.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use hyper::{Response, StatusCode};

use common::console::{set_cookie, Console};
use common::{cli_ok, free_udp_port, full, peer_stats, stderr, Canopy, Origin, Seen};

const PASSWORD: &str = "a long passphrase";
const FROM: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn uncacheable(_: &Seen) -> Response<common::OriginBody> {
    Response::builder()
        .header("cache-control", "no-store")
        .body(full("ok"))
        .unwrap()
}

/// A Canopy answering ICP queries from loopback; returns its ICP port too.
async fn icp_neighbour(name: &str) -> (Canopy, u16) {
    let port = free_udp_port();
    let neighbour = Canopy::start(&[
        ("visible_name", name),
        ("icp_mode", "receive"),
        ("icp_port", &port.to_string()),
        ("icp_allowed_clients", "127.0.0.1/32"),
    ])
    .await;
    (neighbour, port)
}

/// The hierarchy: a child asking `sib` (sibling) and `icpparent` (ICP parent) over ICP,
/// with one HTTP parent.
struct Hierarchy {
    origin: Origin,
    child: Canopy,
    sibling: Canopy,
    sibling_icp: u16,
    icp_parent: Canopy,
    http_parent: Canopy,
    /// The HTTP parent's name, `host:port`.
    http_name: String,
}

impl Hierarchy {
    async fn start() -> Hierarchy {
        let origin = Origin::start(uncacheable).await;
        let (sibling, sibling_icp) = icp_neighbour("the-sibling").await;
        let (icp_parent, parent_icp) = icp_neighbour("the-icp-parent").await;
        let http_parent = Canopy::start(&[("visible_name", "the-http-parent")]).await;
        let http_name = http_parent.addr.to_string();
        let child = Canopy::start(&[
            ("icp_mode", "send-receive"),
            ("icp_port", &free_udp_port().to_string()),
            ("icp_query_timeout_ms", "2000"),
            ("parents", &format!("{http_name};")),
        ])
        .await;
        for (name, kind, neighbour, icp) in [
            ("sib", "sibling", &sibling, sibling_icp),
            ("icpparent", "parent", &icp_parent, parent_icp),
        ] {
            add_peer(&child, name, kind, neighbour.addr.port(), icp);
        }
        cli_ok(&child, &["reload"]);
        Hierarchy {
            origin,
            child,
            sibling,
            sibling_icp,
            icp_parent,
            http_parent,
            http_name,
        }
    }

    /// One miss through the child; the figures each neighbour saw then:
    /// (sibling ICP queries, ICP parent queries, ICP parent requests, HTTP parent requests).
    async fn miss(&self, path: &str) -> (u64, u64, u64, u64) {
        let r = self.child.get(&self.origin.url(path)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        (
            self.sibling.stats().await.icp_queries_received,
            self.icp_parent.stats().await.icp_queries_received,
            self.icp_parent.stats().await.requests,
            self.http_parent.stats().await.requests,
        )
    }
}

/// Who the `canopy` command says took a peer down.
fn cli_user() -> String {
    format!(
        "{} (canopy command)",
        std::env::var("USER").unwrap_or_else(|_| "admin".to_owned())
    )
}

/// The line of `canopy peer list` that starts with `name`.
fn listed(child: &Canopy, name: &str) -> String {
    let list = cli_ok(child, &["peer", "list"]);
    list.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} is not in {list}"))
        .to_owned()
}

/// Adds a peer on loopback (applied at the next reload), without digests: a fetch of its
/// digest would count among the requests it saw.
fn add_peer(child: &Canopy, name: &str, kind: &str, http: u16, icp: u16) {
    let add = format!(
        "peer add {name} 127.0.0.1 --type {kind} --http-port {http} --icp-port {icp} --no-digest"
    );
    cli_ok(child, &add.split(' ').collect::<Vec<_>>());
}

/// A console session, by its cookie.
struct Session {
    cookie: String,
}

fn csrf(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a csrf field") + marker.len();
    page[start..start + page[start..].find('"').expect("end")].to_owned()
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

impl Session {
    async fn log_in(console: &Console) -> Session {
        let form = console.request(FROM, "GET", "/login", &[], "").await;
        let form = form.expect("the login form");
        let login = set_cookie(&form, "canopy_login").expect("a login cookie");
        let body = format!(
            "csrf={}&user=admin&password={}",
            csrf(&form.text()),
            PASSWORD.replace(' ', "+")
        );
        let logged_in = console
            .request(FROM, "POST", "/login", &[("cookie", &login), FORM], &body)
            .await
            .expect("logging in");
        Session {
            cookie: set_cookie(&logged_in, "canopy_session").expect("a session cookie"),
        }
    }

    async fn page(&self, console: &Console, path: &str) -> String {
        let page = console
            .request(FROM, "GET", path, &[("cookie", &self.cookie)], "")
            .await
            .expect("a page");
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.text());
        page.text()
    }

    /// Presses the peer page's Take down (with `reason`) or Bring up; returns the page.
    async fn press(&self, console: &Console, name: &str, down: Option<&str>) -> String {
        let path = format!("/monitor/peers/{name}");
        let token = csrf(&self.page(console, &path).await);
        let body = match down {
            Some(reason) => format!(
                "csrf={token}&action=down&reason={}",
                reason.replace(' ', "+")
            ),
            None => format!("csrf={token}&action=up"),
        };
        let answer = console
            .request(
                FROM,
                "POST",
                &format!("{path}/use"),
                &[("cookie", &self.cookie), FORM],
                &body,
            )
            .await
            .expect("the form's answer");
        // The form redirects to the peer's page, which says what happened.
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
        self.page(console, answer.header("location")).await
    }
}

#[tokio::test]
async fn peers_taken_down_by_hand_get_nothing_across_restart_and_reload_until_brought_up() {
    let mut h = Hierarchy::start().await;
    let before = h.miss("/all-up").await;
    assert_eq!(
        before,
        (1, 1, 0, 1),
        "all up: both asked, the HTTP parent fetches"
    );

    let down = cli_ok(&h.child, &["peer", "down", "sib", "--reason", "disk swap"]);
    assert!(down.contains("peer sib is down: disk swap (by "), "{down}");
    let down = cli_ok(
        &h.child,
        &["parent", "down", &h.http_name, "--reason", "moving racks"],
    );
    assert!(down.contains("is down: moving racks"), "{down}");
    assert_eq!(
        h.miss("/sibling-and-http-parent-down").await,
        (1, 2, 1, 1),
        "only the ICP parent is asked, and it fetches the miss"
    );
    cli_ok(
        &h.child,
        &["peer", "down", "icpparent", "--reason", "new kernel"],
    );
    assert_eq!(
        h.miss("/all-down").await,
        (1, 2, 1, 1),
        "nobody is asked or sent anything"
    );
    assert_eq!(h.origin.count("/all-down"), 1, "fetched from the origin");

    let sib = listed(&h.child, "sib");
    let user = cli_user();
    assert!(
        sib.contains(&format!(" down: disk swap (by {user} since 20")),
        "{sib}"
    );
    let http = listed(&h.child, &h.http_name);
    assert!(
        http.contains(&format!(
            "HTTP parent down: moving racks (by {user} since 20"
        )),
        "{http}"
    );
    let since = peer_stats(&h.child, "sib").await.health.down_since;
    let stats = cli_ok(&h.child, &["stats"]);
    assert!(
        stats.contains(&format!("down: new kernel (by {user} since 20")),
        "{stats}"
    );
    let unknown = h.child.cli(&["peer", "down", "nowhere"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains(&format!(
            "the peers are: {} (HTTP parent), sib (sibling), icpparent (parent)",
            h.http_name
        )),
        "{}",
        stderr(&unknown)
    );

    let console = Console::on(h.child.data_dir(), "admin", PASSWORD).await;
    let session = Session::log_in(&console).await;
    let table = session.page(&console, "/monitor/peers").await;
    for shown in [
        format!("by {user}: disk swap"),
        format!("by {user}: new kernel"),
        format!("by {user}: moving racks"),
        "down by hand since".to_owned(),
    ] {
        assert!(table.contains(&shown), "{shown:?} not on the Peers page");
    }
    let page = session.page(&console, "/monitor/peers/sib").await;
    assert!(
        page.contains(&format!("Taken down by {user}: disk swap")),
        "{page}"
    );
    assert!(page.contains("Bring up"), "{page}");

    h.child.kill();
    h.child.restart().await;
    assert_eq!(
        h.miss("/after-restart").await,
        (1, 2, 1, 1),
        "still down after a restart"
    );
    assert_eq!(peer_stats(&h.child, "sib").await.health.down_since, since);
    assert!(peer_stats(&h.child, &h.http_name).await.health.down_by_hand);
    h.child.reconfigure(&[("visible_name", "renamed-child")]);
    assert_eq!(
        h.miss("/after-reload").await,
        (1, 2, 1, 1),
        "still down in a new config version that keeps them"
    );

    assert!(cli_ok(&h.child, &["peer", "up", "sib"]).contains("peer sib is up"));
    cli_ok(&h.child, &["peer", "up", "icpparent"]);
    cli_ok(&h.child, &["parent", "up", &h.http_name]);
    assert_eq!(
        h.miss("/all-up-again").await,
        (2, 3, 1, 2),
        "asked and sent to again"
    );
    assert!(!listed(&h.child, "sib").contains("down"));
}

#[tokio::test]
async fn a_peer_taken_down_from_the_console_is_down_and_forgotten_when_removed() {
    let h = Hierarchy::start().await;
    let console = Console::on(h.child.data_dir(), "admin", PASSWORD).await;
    let session = Session::log_in(&console).await;
    let answer = session
        .press(&console, "icpparent", Some("swapping disks"))
        .await;
    assert!(
        answer.contains("icpparent is down: it gets no requests and no ICP queries"),
        "{answer}"
    );
    assert!(
        answer.contains("Taken down by admin: swapping disks"),
        "{answer}"
    );
    let health = peer_stats(&h.child, "icpparent").await.health;
    assert_eq!(
        (health.down_by.as_deref(), health.down_reason.as_deref()),
        (Some("admin"), Some("swapping disks"))
    );
    assert_eq!(h.miss("/icp-parent-down").await, (1, 0, 0, 1));

    let answer = session.press(&console, "icpparent", None).await;
    assert!(answer.contains("icpparent is up"), "{answer}");
    assert_eq!(h.miss("/icp-parent-up").await, (2, 1, 0, 2));

    session.press(&console, "sib", Some("retired")).await;
    cli_ok(&h.child, &["peer", "remove", "sib"]);
    cli_ok(&h.child, &["reload"]);
    add_peer(
        &h.child,
        "sib",
        "sibling",
        h.sibling.addr.port(),
        h.sibling_icp,
    );
    cli_ok(&h.child, &["reload"]);
    assert!(!peer_stats(&h.child, "sib").await.health.down);
    assert_eq!(
        h.miss("/sibling-added-again").await.0,
        3,
        "a version without the peer dropped its record: added again, it starts up"
    );
}
