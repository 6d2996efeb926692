//! The console of a fleet on a real PostgreSQL: each node's stats history kept apart and
//! summed, each node's own settings set in the console and applied on that node at once, a
//! console started while PostgreSQL is down, and a node started offline that keeps the peers
//! taken down by hand down.

mod common;

use std::net::{IpAddr, SocketAddr};

use hyper::Response;

use canopy_config::control::{self, Command as ControlCommand};
use canopy_config::database::DatabaseUrl;
use canopy_config::stats::{PeerSnapshot, StatsSnapshot};
use canopy_config::versions::Db;
use canopy_manager::accounts;
use canopy_manager::samples::{self, Scope};
use common::console::{encode_form, hidden_input, Console};
use common::fleet::{Node, Postgres, LIMIT};
use common::*;

const USER: &str = "admin";
const PASSWORD: &str = "a long enough password";
const FROM: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// A fleet of `names.len()` nodes on one HTTP port, node i on 127.0.0.(i+1).
async fn fleet(url: &DatabaseUrl, names: &[&str]) -> (Db, u16, Vec<Node>) {
    let db = Db::connect(url).await.expect("the fleet's database");
    let port = free_port();
    let mut config = db.latest().await.expect("latest").config;
    config.set("http_port", &port.to_string()).expect("port");
    db.save_change(&config, "test", None).await.expect("saved");
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let address = format!("127.0.0.{}", i + 1);
        db.set_node_setting(name, "bind_address", &address)
            .await
            .expect("per node");
        nodes.push(Node::start(name, url).await);
    }
    (db, port, nodes)
}

async fn stats(node: &Node) -> StatsSnapshot {
    let socket = node.dir.path().join("canopy.sock");
    control::call_typed(&socket, ControlCommand::Stats)
        .await
        .expect("stats")
}

/// The newest `requests` sampled for `node`, if any sample was.
async fn sampled_requests(db: &Db, node: &str) -> Option<f64> {
    let scope = Scope::Node(node.to_owned());
    let series = samples::totals(db, &scope, 0).await.expect("samples");
    series.concat().last().map(|s| s.values[0])
}

/// The increase of `requests` over every sample of `scope`, each node's apart, summed.
async fn requests_increase(db: &Db, scope: &Scope, since: i64) -> f64 {
    let series = samples::totals(db, scope, since).await.expect("samples");
    series
        .iter()
        .map(|one| one.last().map_or(0.0, |l| l.values[0]) - one[0].values[0])
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_samples_are_both_kept_and_summed_for_the_fleet() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let url = postgres.url();
    let (db, port, nodes) = fleet(&url, &["node1", "node2"]).await;
    let origin = Origin::start(|_| Response::new(full("ok"))).await;
    let mut consoles = Vec::new();
    for node in &nodes {
        let console = Console::on_fleet(node.dir.path(), &url, &node.name, 1, USER, PASSWORD);
        consoles.push(console.await);
    }
    let since = accounts::unix_now();
    // Both consoles sample their own node, in the same seconds, into the one database.
    wait_for("a sample of each node", LIMIT, || async {
        sampled_requests(&db, "node1").await.is_some()
            && sampled_requests(&db, "node2").await.is_some()
    })
    .await;
    for (i, count) in [(1u8, 3), (2, 5)] {
        let proxy = SocketAddr::from(([127, 0, 0, i], port));
        for n in 0..count {
            let url = origin.url(&format!("/{i}/{n}"));
            let fetched = request_via(proxy, None, "GET", &url, &[]).await;
            assert_eq!(fetched.expect("through the node").status.as_u16(), 200);
        }
    }
    assert_eq!(stats(&nodes[0]).await.requests, 3);
    wait_for("the samples to count every request", LIMIT, || async {
        sampled_requests(&db, "node1").await == Some(3.0)
            && sampled_requests(&db, "node2").await == Some(5.0)
    })
    .await;
    let node2 = Scope::Node("node2".to_owned());
    assert_eq!(requests_increase(&db, &node2, since).await, 5.0);
    assert_eq!(requests_increase(&db, &Scope::Fleet, since).await, 8.0);
    let series = samples::totals(&db, &Scope::Fleet, since)
        .await
        .expect("samples");
    assert_eq!(series.len(), 2, "one series per node, neither overwritten");
    let ats = |i: usize| series[i].iter().map(|s| s.at).collect::<Vec<_>>();
    assert!(
        ats(0).iter().any(|at| ats(1).contains(at)),
        "samples of both nodes in the same second are kept"
    );

    // The console offers each node's charts and the fleet's.
    let console = &consoles[0];
    let session = console.session(USER, PASSWORD).await;
    let cookie = [("cookie", session.as_str())];
    let page = console.request(FROM, "GET", "/", &cookie, "").await;
    let page = page.expect("the dashboard").text();
    assert!(page.contains("id=\"chart-scope\""), "{page}");
    assert!(page.contains("<option>node2</option>"), "{page}");
    let one = console
        .request(FROM, "GET", "/?node=node2", &cookie, "")
        .await;
    let one = one.expect("node2's charts");
    assert_eq!(one.status.as_u16(), 200);
    assert!(one.text().contains("<option selected>node2</option>"));
}

/// The node page's form with `key` set to `value`, every other box as the page shows it.
async fn post_own_settings(
    console: &Console,
    session: &str,
    node: &str,
    key: &str,
    value: &str,
) -> Fetched {
    let cookie = ("cookie", session);
    let path = format!("/monitor/nodes/{node}");
    let page = console.request(FROM, "GET", &path, &[cookie], "").await;
    let page = page.expect("the node's page").text();
    let mut form = vec![("csrf", hidden_input(&page, "csrf"))];
    for own in canopy_config::nodes::PER_NODE {
        let shown = match *own == key {
            true => value.to_owned(),
            false => hidden_input(&page, own),
        };
        form.push((own, shown));
    }
    let body = encode_form(&form);
    let path = format!("{path}/settings");
    let answer = console
        .request(FROM, "POST", &path, &[cookie, FORM], &body)
        .await;
    answer.expect("the form answered")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_applies_its_own_settings_from_the_console_at_once() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let url = postgres.url();
    let (db, port, nodes) = fleet(&url, &["node1", "node2"]).await;
    let version = db.latest().await.expect("latest").id;
    let console = Console::on_fleet(nodes[0].dir.path(), &url, "node1", 60, USER, PASSWORD).await;
    let session = console.session(USER, PASSWORD).await;
    let listening = |node: &Node| {
        let node = node.dir.path().join("canopy.sock");
        async move {
            let status = control::call_typed::<canopy_config::control::StatusReply>(
                &node,
                ControlCommand::Status,
            );
            status.await.map(|s| s.http_listen).unwrap_or_default()
        }
    };
    assert_eq!(listening(&nodes[1]).await, format!("127.0.0.2:{port}"));

    // A port the config model refuses: said under its box, nothing saved.
    let refused = post_own_settings(&console, &session, "node2", "http_port", "eighty").await;
    assert_eq!(refused.status.as_u16(), 422, "{}", refused.text());
    assert!(
        refused.text().contains("data-error-for=\"http_port\""),
        "{}",
        refused.text()
    );
    assert!(db.node_settings("node2").await.expect("own").len() == 1);

    // A new port: node2 moves to it at once, with no new config version.
    let moved = free_port();
    let saved =
        post_own_settings(&console, &session, "node2", "http_port", &moved.to_string()).await;
    assert_eq!(saved.status.as_u16(), 303, "{}", saved.text());
    let there = format!("127.0.0.2:{moved}");
    wait_for("node2 to listen on its own port", LIMIT, || async {
        listening(&nodes[1]).await == there
    })
    .await;
    assert!(tokio::net::TcpStream::connect(&there).await.is_ok());
    assert_eq!(
        db.latest().await.expect("latest").id,
        version,
        "no new version"
    );
    assert_eq!(listening(&nodes[0]).await, format!("127.0.0.1:{port}"));

    // A port taken on node2: it keeps the one it has, and the console says why.
    let taken_port = free_port();
    let taken = std::net::TcpListener::bind(("127.0.0.2", taken_port)).expect("taken");
    let saved = post_own_settings(
        &console,
        &session,
        "node2",
        "http_port",
        &taken_port.to_string(),
    )
    .await;
    assert_eq!(saved.status.as_u16(), 303, "{}", saved.text());
    wait_for("node2 to say it kept its settings", LIMIT, || async {
        let nodes = db.nodes().await.expect("nodes");
        let node2 = nodes.iter().find(|n| n.node.name == "node2");
        node2.and_then(|n| n.own_settings_refused.clone()).is_some()
    })
    .await;
    assert_eq!(listening(&nodes[1]).await, there);
    let cookie = ("cookie", session.as_str());
    let page = console
        .request(FROM, "GET", "/monitor/nodes/node2", &[cookie], "")
        .await;
    let page = page.expect("node2's page").text();
    assert!(page.contains("id=\"own-settings-refused\""), "{page}");
    assert!(page.contains(&taken_port.to_string()), "{page}");
    drop(taken);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_says_the_database_is_unreachable_and_opens_once_it_is_back() {
    let Some(mut postgres) = Postgres::start() else {
        return;
    };
    postgres.down();
    // A password in the URL (trusted here) that the page must not show.
    let url = DatabaseUrl::Postgres(format!(
        "postgres://canopy:hunter2@127.0.0.1:{}/postgres",
        postgres.port
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let console = Console::on_fleet(dir.path(), &url, "node1", 60, USER, PASSWORD).await;
    let page = console.request(FROM, "GET", "/", &[], "").await;
    let page = page.expect("an answer while the database is down");
    assert_eq!(page.status.as_u16(), 503);
    let text = page.text();
    let shown = format!("postgres://canopy@127.0.0.1:{}/postgres", postgres.port);
    assert!(text.contains(&shown), "{text}");
    assert!(text.contains("unreachable since"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    postgres.up();
    wait_for("the console to open", LIMIT, || async {
        let login = console.request(FROM, "GET", "/login", &[], "").await;
        login.is_ok_and(|l| l.status.as_u16() == 200)
    })
    .await;
    let db = Db::connect(&url).await.expect("the database is back");
    accounts::set_password(&db, USER, PASSWORD)
        .await
        .expect("account");
    let session = console.session(USER, PASSWORD).await;
    let cookie = [("cookie", session.as_str())];
    let page = console
        .request(FROM, "GET", "/monitor/nodes", &cookie, "")
        .await;
    assert_eq!(page.expect("the Nodes page").status.as_u16(), 200);
}

fn health(stats: &StatsSnapshot, name: &str) -> PeerSnapshot {
    stats
        .peers
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no peer {name}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_started_offline_keeps_its_peers_down_by_hand() {
    let Some(mut postgres) = Postgres::start() else {
        return;
    };
    let url = postgres.url();
    let db = Db::connect(&url).await.expect("the fleet's database");
    let parent = format!("127.0.0.1:{}", free_port());
    let mut config = db.latest().await.expect("latest").config;
    config
        .set("http_port", &free_port().to_string())
        .expect("port");
    config
        .set("parents", &format!("{parent};"))
        .expect("parent");
    db.save_change(&config, "test", None).await.expect("saved");
    let mut node = Node::start("node1", &url).await;
    let socket = node.dir.path().join("canopy.sock");
    let down = ControlCommand::Peer {
        name: parent.clone(),
        down: true,
        reason: Some("new disks".to_owned()),
        by: Some("alice".to_owned()),
    };
    control::call_typed::<PeerSnapshot>(&socket, down)
        .await
        .expect("taken down");
    assert!(health(&stats(&node).await, &parent).health.down_by_hand);

    // PostgreSQL goes away and the node restarts: the parent stays down.
    postgres.down();
    node.restart().await;
    let status = node.status().await.expect("status");
    assert!(status.database_down.is_some(), "{}", node.log());
    let offline = health(&stats(&node).await, &parent);
    assert!(offline.health.down_by_hand, "{}", node.log());
    assert_eq!(offline.health.down_reason.as_deref(), Some("new disks"));

    // While the node was away, an administrator brought the parent up elsewhere; the node
    // starts offline again, then follows the database's records once it is back.
    node.kill();
    postgres.up();
    let db = Db::connect(&url).await.expect("the database is back");
    db.bring_up(&parent).await.expect("brought up");
    postgres.down();
    node.restart().await;
    assert!(health(&stats(&node).await, &parent).health.down_by_hand);
    postgres.up();
    wait_for("the node to bring the parent up", LIMIT, || async {
        !health(&stats(&node).await, &parent).health.down_by_hand
    })
    .await;
}

/// `canopy run` for one node of a fleet, read until it says where to point a client.
struct CanopyRun {
    child: std::process::Child,
    printed: String,
}

impl CanopyRun {
    fn start(dir: &std::path::Path, url: &DatabaseUrl, node: &str) -> CanopyRun {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
            .arg("--data-dir")
            .arg(dir)
            .arg("--database")
            .arg(url.as_arg())
            .arg("--node")
            .arg(node)
            .arg("run")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("canopy run");
        let out = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(out).lines();
        let mut printed = String::new();
        while !printed.contains("Ctrl-C") {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("canopy run ended having printed: {printed}"))
                .expect("a line");
            printed.push_str(&line);
            printed.push('\n');
        }
        CanopyRun { child, printed }
    }

    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let exit = self.child.wait().expect("canopy run exits");
        assert!(exit.success(), "{exit}");
    }
}

impl Drop for CanopyRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `canopy run` starts a node whose PostgreSQL is down on the version it last applied,
/// says so, and its proxy serves while its console says the database is unreachable.
#[tokio::test]
async fn canopy_run_starts_a_node_on_its_last_version_while_postgresql_is_down() {
    let Some(mut postgres) = Postgres::start() else {
        return;
    };
    let url = postgres.url();
    let db = Db::connect(&url).await.expect("the fleet's database");
    let port = free_port();
    let manager = format!("127.0.0.1:{}", free_port());
    let mut config = db.latest().await.expect("latest").config;
    for (key, value) in [
        ("http_port", port.to_string()),
        ("bind_address", "127.0.0.1".to_owned()),
        ("manager_listen", manager.clone()),
    ] {
        config.set(key, &value).expect("a valid setting");
    }
    let version = db.save_change(&config, "test", None).await.expect("saved");
    drop(db);
    let dir = tempfile::tempdir().expect("data dir");

    let online = CanopyRun::start(dir.path(), &url, "runner");
    assert!(
        online
            .printed
            .contains(&format!("(config version {version})")),
        "{}",
        online.printed
    );
    online.stop();

    postgres.down();
    let offline = CanopyRun::start(dir.path(), &url, "runner");
    for said in [
        "The database does not answer".to_owned(),
        format!("(config version {version})"),
        format!("Proxy:   127.0.0.1:{port}"),
        format!("Console: http://{manager}/"),
    ] {
        assert!(offline.printed.contains(&said), "{}", offline.printed);
    }
    let status = control::call_typed::<canopy_config::control::StatusReply>(
        &dir.path().join("canopy.sock"),
        ControlCommand::Status,
    )
    .await
    .expect("the proxy answers");
    assert!(status.database_down.is_some(), "{status:?}");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok());
    let console: SocketAddr = manager.parse().expect("an address");
    wait_for(
        "the console to say the database is unreachable",
        LIMIT,
        || async {
            request_via(console, None, "GET", &format!("http://{console}/"), &[])
                .await
                .is_ok_and(|page| {
                    page.status.as_u16() == 503 && page.text().contains("unreachable")
                })
        },
    )
    .await;
    offline.stop();
}

/// `canopy node set` is applied by the node at once, with no new config version.
#[tokio::test]
async fn a_node_applies_its_own_setting_from_the_cli_at_once() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let url = postgres.url();
    let (db, _port, nodes) = fleet(&url, &["node1"]).await;
    let version = db.latest().await.expect("latest").id;
    let moved = free_port();
    let set = canopy_cli(
        nodes[0].dir.path(),
        &[
            "--database",
            &url.as_arg(),
            "--node",
            "node1",
            "node",
            "set",
            "http_port",
            &moved.to_string(),
        ],
    );
    assert!(set.status.success(), "{}", stderr(&set));
    assert!(
        stdout(&set).contains("applied by the node now"),
        "{}",
        stdout(&set)
    );
    let there = format!("127.0.0.1:{moved}");
    wait_for("node1 to listen on its own port", LIMIT, || async {
        nodes[0]
            .status()
            .await
            .is_some_and(|s| s.http_listen == there)
    })
    .await;
    assert_eq!(
        db.latest().await.expect("latest").id,
        version,
        "no new version"
    );
}
