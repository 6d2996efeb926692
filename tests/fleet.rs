//! A fleet: three real `canopy-proxy` nodes and a console on one real PostgreSQL (Debian's
//! `postgresql`, started here with initdb in a temporary directory, on loopback). A change
//! made in the console reaches every node; a version one node cannot apply is rejected there
//! alone; a node restarted while PostgreSQL is down starts on the version it last applied,
//! and catches up when PostgreSQL is back.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

use canopy_config::config::{Control, Group};
use canopy_config::control::{self, Command as ControlCommand};
use canopy_config::database::DatabaseUrl;
use canopy_config::nodes::Outcome;
use canopy_config::stats::StatsSnapshot;
use canopy_config::versions::Db;
use canopy_manager::accounts;
use canopy_proxy::hierarchy::carp::{self, CarpArray};
use common::console::{cookie, encode_form, hidden_input};
use common::fleet::{Node, Postgres};
use common::*;

const PASSWORD: &str = "a long enough password";
const LIMIT: Duration = Duration::from_secs(30);

/// The console of `node`, on the fleet's database, logged in as an administrator.
struct Console {
    child: Child,
    addr: SocketAddr,
    session: String,
}

impl Console {
    async fn start(node: &Node, db: &Db) -> Console {
        accounts::set_password(db, "admin", PASSWORD)
            .await
            .expect("account");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(node.dir.path().join("manager.log")).expect("log");
        let child = Command::new(binary("canopy-manager"))
            .arg("--db")
            .arg(node.dir.path().join("canopy.db"))
            .arg("--control")
            .arg(node.dir.path().join("canopy.sock"))
            .arg("--database")
            .arg(node.url.as_arg())
            .arg("--listen")
            .arg(addr.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start canopy-manager");
        wait_for("the console to listen", LIMIT, || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        let mut console = Console {
            child,
            addr,
            session: String::new(),
        };
        let form = console.send("/login", None).await;
        let login = cookie(&form, "canopy_login");
        let fields = [
            ("csrf", hidden_input(&form.text(), "csrf")),
            ("user", "admin".to_owned()),
            ("password", PASSWORD.to_owned()),
        ];
        console.session = login;
        let answer = console.send("/login", Some(encode_form(&fields))).await;
        assert_eq!(answer.status.as_u16(), 303, "{}", answer.text());
        console.session = cookie(&answer, "canopy_session");
        console
    }

    async fn send(&self, path: &str, form: Option<String>) -> Fetched {
        let mut headers = vec![
            ("host", self.addr.to_string()),
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
        ];
        if !self.session.is_empty() {
            headers.push(("cookie", self.session.clone()));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let method = if form.is_some() { "POST" } else { "GET" };
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
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

    /// Make These Changes on `group`'s page with `key` set to `value`, every other field as
    /// the page shows it.
    async fn change(&self, db: &Db, group: Group, key: &str, value: &str) -> Fetched {
        let path = format!("/configure/{}", group.slug());
        let page = self.send(&path, None).await.text();
        let config = db.in_force().await.expect("in force").config;
        let mut form = vec![
            ("csrf", hidden_input(&page, "csrf")),
            ("based_on", hidden_input(&page, "based_on")),
        ];
        for setting in group.settings() {
            let shown = match setting.key == key {
                true => value.to_owned(),
                false => config.get(setting.key).expect("setting"),
            };
            match setting.control {
                Control::Checkbox if shown == "false" => {}
                Control::List => form.push((setting.key, shown.replace(", ", "\n"))),
                _ => form.push((setting.key, shown)),
            }
        }
        let answer = self.send(&path, Some(encode_form(&form))).await;
        match answer.status.as_u16() {
            303 => self.send(answer.header("location"), None).await,
            _ => answer,
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `node` recorded for `version`.
async fn outcome(db: &Db, node: &str, version: i64) -> Option<Outcome> {
    db.nodes()
        .await
        .expect("nodes")
        .into_iter()
        .find(|n| n.node.name == node)
        .and_then(|n| n.latest)
        .filter(|o| o.version == version)
        .map(|o| o.outcome)
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_follow_one_console_and_serve_on_without_postgresql() {
    let Some(mut postgres) = Postgres::start() else {
        return;
    };
    let url = postgres.url();
    let db = Db::connect(&url).await.expect("the fleet's database");
    // One port for the fleet; each node listens on an address of its own.
    let port = free_port();
    let mut config = db.latest().await.expect("latest").config;
    config.set("http_port", &port.to_string()).expect("port");
    let first = db.save_change(&config, "test", None).await.expect("saved");
    let names = ["node1", "node2", "node3"];
    for (i, name) in names.iter().enumerate() {
        let address = format!("127.0.0.{}", i + 1);
        db.set_node_setting(name, "bind_address", &address)
            .await
            .expect("per node");
    }
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(Node::start(name, &url).await);
    }
    for node in &nodes {
        assert_eq!(node.in_force().await, first, "{}", node.log());
    }

    // A change made in node1's console: every node applies it.
    let console = Console::start(&nodes[0], &db).await;
    let page = console
        .change(&db, Group::Timeouts, "read_timeout_ms", "45000")
        .await;
    let second = first + 1;
    assert!(
        page.text()
            .contains(&format!("version {second} is in force")),
        "{}",
        page.text()
    );
    for node in &nodes {
        node.wait_for_version(second).await;
    }
    // Each node records its outcome just after it swaps the version in.
    let applied = format!("version {second} applied");
    wait_for(
        "the Nodes page to show three nodes on it",
        LIMIT,
        || async {
            let shown = console.send("/monitor/nodes", None).await.text();
            names
                .iter()
                .all(|name| shown.contains(&format!("data-node=\"{name}\"")))
                && shown.matches(&applied).count() == 3
        },
    )
    .await;

    // A port taken on node3 alone: node3 rejects the version and keeps its own, the others
    // apply it (told by PostgreSQL; nobody asks them to reload).
    let moved = free_port();
    let taken = std::net::TcpListener::bind(("127.0.0.3", moved)).expect("taken on node3");
    config.set("read_timeout_ms", "45000").expect("as in force");
    config.set("http_port", &moved.to_string()).expect("port");
    let third = db.save_change(&config, "test", None).await.expect("saved");
    nodes[0].wait_for_version(third).await;
    nodes[1].wait_for_version(third).await;
    wait_for("node3 to reject the version", LIMIT, || async {
        matches!(
            outcome(&db, "node3", third).await,
            Some(Outcome::Rejected(_))
        )
    })
    .await;
    assert_eq!(nodes[2].in_force().await, second);
    let status = nodes[2].status().await.expect("node3");
    let rejected = status.rejected_version.expect("node3 says it rejected");
    assert_eq!(rejected.id, third);
    assert!(
        rejected.reason.contains(&moved.to_string()),
        "{}",
        rejected.reason
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", moved))
            .await
            .is_ok(),
        "node1 serves on the new port"
    );
    drop(taken);

    // PostgreSQL goes away: node2 restarts on the version it last applied.
    postgres.down();
    nodes[1].restart().await;
    let status = nodes[1].status().await.expect("node2");
    assert_eq!(status.config_version, third);
    assert!(
        status.database_down.is_some(),
        "node2 says the database is down"
    );
    let said = canopy_cli(nodes[1].dir.path(), &["status"]);
    assert!(
        stdout(&said).contains("the database has been unreachable"),
        "{}",
        stdout(&said)
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.2", moved))
            .await
            .is_ok(),
        "node2 serves without PostgreSQL"
    );

    // PostgreSQL is back: a new version reaches every node, node2 included.
    postgres.up();
    config.set("read_timeout_ms", "50000").expect("timeout");
    let fourth = db.save_change(&config, "test", None).await.expect("saved");
    for node in &nodes {
        node.wait_for_version(fourth).await;
    }
    wait_for("node2 to say the database is back", LIMIT, || async {
        nodes[1]
            .status()
            .await
            .is_some_and(|s| s.database_down.is_none())
    })
    .await;
    wait_for("node3 to record that it applied it", LIMIT, || async {
        outcome(&db, "node3", fourth).await == Some(Outcome::Applied)
    })
    .await;

    // A canary: the next change made in the console goes to node1 alone, then to every node
    // once it is rolled out.
    let page = console.send("/monitor/nodes", None).await.text();
    let csrf = hidden_input(&page, "csrf");
    let form = encode_form(&[("csrf", csrf.clone()), ("node", "node1".to_owned())]);
    let started = console.send("/monitor/nodes/canary", Some(form)).await;
    assert_eq!(started.status.as_u16(), 303, "{}", started.text());
    let page = console
        .change(&db, Group::Timeouts, "read_timeout_ms", "55000")
        .await;
    let fifth = fourth + 1;
    assert!(
        page.text()
            .contains(&format!("version {fifth} is in force")),
        "{}",
        page.text()
    );
    nodes[0].wait_for_version(fifth).await;
    // node2 and node3 check in twice since (their heartbeat), and stay where they were.
    for _ in 0..2 {
        let seen = last_seen(&db).await;
        wait_for("node2 and node3 to check in", LIMIT, || async {
            let now = last_seen(&db).await;
            ["node2", "node3"].iter().all(|n| now[*n] > seen[*n])
        })
        .await;
    }
    assert_eq!(nodes[1].in_force().await, fourth);
    assert_eq!(nodes[2].in_force().await, fourth);
    let shown = console.send("/monitor/nodes", None).await.text();
    assert!(shown.contains("Canary: since"), "{shown}");
    let form = encode_form(&[("csrf", csrf)]);
    let rolled = console.send("/monitor/nodes/rollout", Some(form)).await;
    assert_eq!(rolled.status.as_u16(), 303, "{}", rolled.text());
    for node in &nodes {
        node.wait_for_version(fifth).await;
    }
}

/// Each node's `last_seen`, by name.
async fn last_seen(db: &Db) -> std::collections::HashMap<String, String> {
    db.nodes()
        .await
        .expect("nodes")
        .into_iter()
        .map(|n| (n.node.name, n.node.last_seen))
        .collect()
}

impl Node {
    /// Starts node `n` of a fleet on its own address, 127.0.0.`n`, named `node{n}` and
    /// showing that name in Via.
    async fn start_numbered(n: u8, db: &Db, url: &DatabaseUrl) -> Node {
        let name = format!("node{n}");
        db.set_node_setting(&name, "bind_address", &format!("127.0.0.{n}"))
            .await
            .expect("per node");
        db.set_node_setting(&name, "visible_name", &name)
            .await
            .expect("per node");
        Node::start(&name, url).await
    }

    async fn http(&self) -> SocketAddr {
        let status = self.status().await.expect("the node answers");
        status.http_listen.parse().expect("an address")
    }

    async fn get(&self, url: &str) -> common::Fetched {
        request_via(self.http().await, None, "GET", url, &[])
            .await
            .unwrap_or_else(|e| panic!("{} did not answer for {url}: {e}", self.name))
    }

    /// Its access log's lines for `url`.
    fn logged(&self, url: &str) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.split_whitespace().any(|f| f == url))
            .map(str::to_owned)
            .collect()
    }

    async fn wait_logged(&self, what: &str, url: &str) {
        wait_for(
            &format!(
                "{} to log {what} for {url}: {:?}",
                self.name,
                self.logged(url)
            ),
            LIMIT,
            || async { self.logged(url).iter().any(|l| l.contains(what)) },
        )
        .await;
    }

    /// Waits until this node's peers (siblings, or the CARP array's parents) include every
    /// one of `others`.
    async fn wait_for_fleet(&self, others: &[&Node]) {
        let socket = self.dir.path().join("canopy.sock");
        wait_for(
            &format!("{} to peer with the fleet", self.name),
            LIMIT,
            || async {
                let Ok(stats) =
                    control::call_typed::<StatsSnapshot>(&socket, ControlCommand::Stats).await
                else {
                    return false;
                };
                others.iter().all(|other| {
                    let name = format!("fleet:{}", other.name);
                    stats.peers.iter().any(|p| p.name == name)
                })
            },
        )
        .await;
    }
}

/// A fleet's database on `postgres` with `settings` in its version, an origin whose
/// objects stay fresh for an hour, and three nodes that peer with each other.
async fn fleet_on(postgres: &Postgres, settings: &[(&str, &str)]) -> (Db, Origin, Vec<Node>) {
    let db = Db::connect(&postgres.url())
        .await
        .expect("the fleet's database");
    let mut config = db.latest().await.expect("latest").config;
    let (http_port, icp_port) = (free_port().to_string(), free_udp_port().to_string());
    let mut all = vec![
        ("http_port", http_port.as_str()),
        ("icp_port", icp_port.as_str()),
        ("icp_mode", "send-receive"),
        ("icp_query_timeout_ms", "2000"),
    ];
    all.extend_from_slice(settings);
    config
        .set_all(all.iter().copied())
        .expect("the fleet's settings");
    db.save_change(&config, "test", None).await.expect("saved");
    let origin = Origin::start(|seen| {
        let mut response = hyper::Response::new(full(format!("object {}", seen.path)));
        let headers = response.headers_mut();
        headers.insert("cache-control", "max-age=3600".parse().unwrap());
        response
    })
    .await;
    let mut nodes = Vec::new();
    for n in 1..=3 {
        nodes.push(Node::start_numbered(n, &db, &postgres.url()).await);
    }
    for node in &nodes {
        let others: Vec<&Node> = nodes.iter().filter(|o| o.name != node.name).collect();
        node.wait_for_fleet(&others).await;
    }
    (db, origin, nodes)
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_siblings_serve_each_others_objects_and_a_new_node_joins_by_itself() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let url = postgres.url();
    let (db, origin, nodes) = fleet_on(&postgres, &[("fleet_peering", "siblings")]).await;

    // Fetched through node1, then asked of node2: node1 serves it as a sibling.
    let object = origin.url("/shared");
    assert_eq!(nodes[0].get(&object).await.text(), "object /shared");
    let got = nodes[1].get(&object).await;
    assert_eq!(got.text(), "object /shared");
    assert_eq!(origin.count("/shared"), 1, "the origin was asked again");
    nodes[1].wait_logged("SIBLING_HIT/127.0.0.1", &object).await;

    // A fourth node starts later: nobody edits the others, and they use it.
    let fourth = Node::start_numbered(4, &db, &url).await;
    let everyone: Vec<&Node> = nodes.iter().collect();
    fourth.wait_for_fleet(&everyone).await;
    nodes[0].wait_for_fleet(&[&fourth]).await;
    let late = origin.url("/late");
    assert_eq!(fourth.get(&late).await.text(), "object /late");
    assert_eq!(nodes[0].get(&late).await.text(), "object /late");
    assert_eq!(origin.count("/late"), 1, "the origin was asked again");
    nodes[0].wait_logged("SIBLING_HIT/127.0.0.4", &late).await;
    // Objects the fleet holds come from it, whichever node is asked first.
    assert_eq!(fourth.get(&object).await.text(), "object /shared");
    assert_eq!(origin.count("/shared"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_carp_gives_each_url_one_home_node_and_falls_back_when_it_stops() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let (_db, origin, mut nodes) = fleet_on(&postgres, &[("fleet_peering", "carp")]).await;
    let array = CarpArray::new(nodes.iter().map(|n| (n.name.as_str(), 1)));
    let home_of = |url: &str| {
        array
            .pick(&carp::request_url(&url.parse().unwrap()))
            .unwrap()
    };

    // Two URLs, asked of the nodes in two orders: each reaches the origin once, through
    // its home; the others' logs say CARP to it, and nothing goes round.
    for (path, order) in [("/one", [0, 1, 2]), ("/two", [2, 1, 0])] {
        let object = origin.url(path);
        let home = home_of(&object);
        for &i in &order {
            let got = nodes[i].get(&object).await;
            assert_eq!(got.text(), format!("object {path}"), "{}", nodes[i].name);
        }
        assert_eq!(origin.count(path), 1, "{path} fetched again");
        let home_address = format!("CARP/127.0.0.{}", home + 1);
        // The access log is written once each client has the whole response.
        wait_for(&format!("the nodes to log {path}"), LIMIT, || async {
            (nodes.iter().map(|n| n.logged(&object).len())).sum::<usize>() == 5
        })
        .await;
        for (i, node) in nodes.iter().enumerate() {
            let lines = node.logged(&object);
            if i == home {
                // Its own client's request and the two the others sent it.
                assert_eq!(lines.len(), 3, "{}: {lines:?}", node.name);
                assert!(!lines.iter().any(|l| l.contains("CARP/")), "{lines:?}");
            } else {
                assert_eq!(lines.len(), 1, "{}: {lines:?}", node.name);
                assert!(lines[0].contains(&home_address), "{lines:?}");
            }
        }
    }

    // The home node of a URL stops: the other two fetch it directly.
    let object = (0..)
        .map(|i| origin.url(&format!("/orphan{i}")))
        .find(|object| home_of(object) == 0)
        .expect("a URL at home on node1");
    nodes[0].kill();
    for node in &nodes[1..] {
        let got = node.get(&object).await;
        assert_eq!(got.status.as_u16(), 200, "{}", node.log());
        node.wait_logged("DIRECT/", &object).await;
    }
    assert_eq!(origin.count(&object[object.rfind('/').unwrap()..]), 2);
}
