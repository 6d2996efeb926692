//! ICP peering end to end, with a real Squid as the neighbour on both sides (DESIGN.md §4,
//! §5, §9): real `canopy-proxy` processes, a counting origin, Squid's access log as the
//! witness of what Squid did.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use canopy_config::stats::PeerState;
use hyper::{Response, StatusCode};

use common::squid::{squid_binary, Squid, SQUID_IP};
use common::{
    cli_ok, free_udp_port, full, peer_stats, request_via, stderr, stdout, wait_for, Canopy, Origin,
};

const LIMIT: Duration = Duration::from_secs(10);

/// Cacheable for an hour; paths with "vary" vary on X-Variant.
async fn origin() -> Origin {
    Origin::start(|seen| {
        let mut response = Response::new(full(format!("object {}", seen.path)));
        let headers = response.headers_mut();
        headers.insert("cache-control", "max-age=3600".parse().unwrap());
        if seen.path.contains("vary") {
            headers.insert("vary", "X-Variant".parse().unwrap());
        }
        response
    })
    .await
}

/// Settings of a Canopy taking part in ICP on a free port; returns the port too. The query
/// timeout is fixed and generous, so that a busy machine does not turn a reply into a
/// timeout (the dynamic timeout has its unit tests).
fn icp_settings(mode: &str) -> (Vec<(&'static str, String)>, u16) {
    let port = free_udp_port();
    (
        vec![
            ("icp_mode", mode.to_owned()),
            ("icp_port", port.to_string()),
            ("icp_query_timeout_ms", "2000".to_owned()),
        ],
        port,
    )
}

async fn start_canopy(settings: &[(&'static str, String)]) -> Canopy {
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Canopy::start(&pairs).await
}

/// Adds Squid as a peer of `kind` and applies it.
fn add_squid_peer(canopy: &Canopy, squid: &Squid, kind: &str, extra: &[&str]) {
    let (http, icp) = (squid.http.port().to_string(), squid.icp_port.to_string());
    let mut args = vec![
        "peer",
        "add",
        "squid",
        "127.0.0.2",
        "--type",
        kind,
        "--http-port",
        &http,
        "--icp-port",
        &icp,
    ];
    args.extend_from_slice(extra);
    cli_ok(canopy, &args);
    cli_ok(canopy, &["reload"]);
}

/// Canopy with `settings` (ICP on `icp_port`) and a Squid, each the other's sibling.
async fn siblings_with_squid(
    binary: &std::path::Path,
    settings: &[(&'static str, String)],
    icp_port: u16,
) -> (Canopy, Squid) {
    let canopy = start_canopy(settings).await;
    let squid = Squid::start(
        binary,
        &format!(
            "cache_peer 127.0.0.1 sibling {} {icp_port} name=canopy\nicp_query_timeout 2000\n",
            canopy.addr.port()
        ),
    );
    add_squid_peer(&canopy, &squid, "sibling", &[]);
    (canopy, squid)
}

#[tokio::test]
async fn squid_as_sibling_serves_what_it_holds_and_a_miss_goes_to_the_origin() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let squid = Squid::start(&binary, "");
    let held = origin.url("/held");
    let warm = request_via(squid.http, None, "GET", &held, &[])
        .await
        .unwrap();
    assert_eq!(warm.status, StatusCode::OK);
    assert_eq!(origin.count("/held"), 1);

    let (settings, _) = icp_settings("send-receive");
    let canopy = start_canopy(&settings).await;
    add_squid_peer(&canopy, &squid, "sibling", &["--proxy-only"]);

    let got = canopy.get(&held).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "object /held");
    assert_eq!(
        origin.count("/held"),
        1,
        "the origin saw the object fetched again"
    );
    squid.wait_logged("UDP_HIT/", &held).await;
    squid.wait_logged("_HIT/200", &held).await;
    canopy.wait_logged("SIBLING_HIT/127.0.0.2", &held).await;
    let squid_peer = peer_stats(&canopy, "squid").await;
    assert_eq!(
        (squid_peer.icp_replies["HIT"], squid_peer.hits_served),
        (1, 1)
    );

    let neither = origin.url("/neither");
    let got = canopy.get(&neither).await;
    assert_eq!(got.text(), "object /neither");
    assert_eq!(origin.count("/neither"), 1);
    squid.wait_logged("UDP_MISS/", &neither).await;
    canopy.wait_logged("HIER_DIRECT/", &neither).await;
    assert_eq!(
        squid.logged("TCP_", &neither),
        0,
        "squid was asked over HTTP"
    );
    let squid_peer = peer_stats(&canopy, "squid").await;
    assert_eq!(
        (squid_peer.icp_queries, squid_peer.icp_replies["MISS"]),
        (2, 1)
    );
    assert_eq!(squid_peer.state, Some(PeerState::Up));

    // proxy-only: what came from the sibling was not stored here, what came direct was.
    assert_eq!(canopy.stats().await.objects, 1);
}

#[tokio::test]
async fn canopy_as_squids_sibling_answers_hit_and_serves_it_and_answers_miss() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let (settings, icp_port) = icp_settings("receive");
    let (canopy, squid) = siblings_with_squid(&binary, &settings, icp_port).await;

    squid.fetches_from(&canopy, &origin).await;

    let before = canopy.stats().await.icp_answers;
    let held = origin.url("/canopy-holds");
    canopy.get(&held).await;
    let got = request_via(squid.http, None, "GET", &held, &[])
        .await
        .unwrap();
    assert_eq!(got.text(), "object /canopy-holds");
    assert_eq!(origin.count("/canopy-holds"), 1);
    squid.wait_logged("SIBLING_HIT/127.0.0.1", &held).await;
    canopy.wait_logged("TCP_HIT/200", &held).await;
    assert!(canopy
        .access_log()
        .lines()
        .any(|l| l.contains("127.0.0.2") && l.contains(&held)));

    let lacks = origin.url("/canopy-lacks");
    let got = request_via(squid.http, None, "GET", &lacks, &[])
        .await
        .unwrap();
    assert_eq!(got.text(), "object /canopy-lacks");
    squid.wait_logged("HIER_DIRECT/", &lacks).await;
    let after = canopy.stats().await.icp_answers;
    assert_eq!(after["HIT"], before["HIT"] + 1);
    assert_eq!(after["MISS"], before["MISS"] + 1);
    assert_eq!(after["DENIED"], 0);
}

#[tokio::test]
async fn a_silent_parent_is_marked_dead_not_waited_for_and_revived_by_its_answer() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let squid = Squid::start(&binary, "");
    let (mut settings, _) = icp_settings("send-receive");
    settings.push(("icp_query_timeout_ms", "1000".into()));
    settings.push(("icp_dead_peer_timeout_s", "1".into()));
    let canopy = start_canopy(&settings).await;
    add_squid_peer(&canopy, &squid, "parent", &[]);

    let first = origin.url("/p1");
    canopy.get(&first).await;
    squid.wait_logged("UDP_MISS/", &first).await;
    canopy
        .wait_logged("FIRST_PARENT_MISS/127.0.0.2", &first)
        .await;

    squid.pause();
    let silent = origin.url("/p2");
    assert_eq!(canopy.get(&silent).await.status, StatusCode::OK);
    canopy.wait_logged("HIER_DIRECT/", &silent).await;
    assert_eq!(peer_stats(&canopy, "squid").await.icp_timeouts, 1);
    wait_for("the parent to be marked dead", LIMIT, || async {
        peer_stats(&canopy, "squid").await.state == Some(PeerState::Dead)
    })
    .await;

    let before = peer_stats(&canopy, "squid").await;
    let while_dead = origin.url("/p3");
    let started = std::time::Instant::now();
    assert_eq!(canopy.get(&while_dead).await.status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "a dead peer is not waited for"
    );
    let after = peer_stats(&canopy, "squid").await;
    assert_eq!(
        after.icp_queries,
        before.icp_queries + 1,
        "a dead peer is still asked"
    );
    assert_eq!(
        after.icp_timeouts,
        before.icp_timeouts + 1,
        "its silence counts as a timeout until it answers"
    );
    assert!(after.state_since.is_some());

    squid.resume();
    wait_for("the parent's late answers to revive it", LIMIT, || async {
        peer_stats(&canopy, "squid").await.state == Some(PeerState::Up)
    })
    .await;
    wait_for("both late answers to count as replies", LIMIT, || async {
        let peer = peer_stats(&canopy, "squid").await;
        (peer.icp_late_replies, peer.icp_timeouts) == (2, 0)
    })
    .await;
    assert_eq!(peer_stats(&canopy, "squid").await.icp_replies["MISS"], 3);
    let revived = origin.url("/p4");
    canopy.get(&revived).await;
    canopy
        .wait_logged("FIRST_PARENT_MISS/127.0.0.2", &revived)
        .await;
}

/// Canopy's count of Squid's replies by opcode, late ones included, is what Squid's own access
/// log says it answered; every query is a reply or a timeout.
#[tokio::test]
async fn per_peer_reply_counts_match_squids_access_log_exactly() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let squid = Squid::start(&binary, "");
    let held: Vec<String> = (0..3)
        .map(|i| origin.url(&format!("/count-held-{i}")))
        .collect();
    for url in &held {
        let warm = request_via(squid.http, None, "GET", url, &[])
            .await
            .unwrap();
        assert_eq!(warm.status, StatusCode::OK);
    }
    let (settings, _) = icp_settings("send-receive");
    let canopy = start_canopy(&settings).await;
    add_squid_peer(&canopy, &squid, "sibling", &[]);

    let misses: Vec<String> = (0..8)
        .map(|i| origin.url(&format!("/count-miss-{i}")))
        .collect();
    for url in held.iter().chain(&misses) {
        assert_eq!(canopy.get(url).await.status, StatusCode::OK);
    }
    let answered = |what: &str| {
        squid
            .access_log()
            .lines()
            .filter(|l| l.contains(what))
            .count() as u64
    };
    wait_for("squid to log every ICP answer", LIMIT, || async {
        answered("UDP_HIT/") + answered("UDP_MISS/") == 11
    })
    .await;
    let peer = peer_stats(&canopy, "squid").await;
    let replies: u64 = peer.icp_replies.values().sum();
    assert_eq!(
        (peer.icp_replies["HIT"], peer.icp_replies["MISS"]),
        (answered("UDP_HIT/"), answered("UDP_MISS/")),
        "{peer:?}"
    );
    assert_eq!((answered("UDP_HIT/"), answered("UDP_MISS/")), (3, 8));
    assert_eq!(peer.icp_queries, replies + peer.icp_timeouts, "{peer:?}");
}

#[tokio::test]
async fn a_false_hit_falls_through_to_the_next_hop_and_is_counted() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let squid = Squid::start(&binary, "");
    // Squid holds variant "a"; ICP carries only the URL, so it answers HIT for variant "b".
    let url = origin.url("/vary-me");
    request_via(squid.http, None, "GET", &url, &[("x-variant", "a")])
        .await
        .unwrap();
    let (settings, _) = icp_settings("send-receive");
    let canopy = start_canopy(&settings).await;
    add_squid_peer(&canopy, &squid, "sibling", &[]);

    let got = canopy.request("GET", &url, &[("x-variant", "b")]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "object /vary-me");
    assert_eq!(origin.count("/vary-me"), 2);
    squid.wait_logged("UDP_HIT/", &url).await;
    squid.wait_logged("/504", &url).await;
    canopy.wait_logged("HIER_DIRECT/", &url).await;
    let peer = peer_stats(&canopy, "squid").await;
    assert_eq!(
        (peer.icp_replies["HIT"], peer.false_hits, peer.hits_served),
        (1, 1, 0)
    );
    assert_eq!(
        peer.false_hits_by_method(),
        [("icp", 1), ("htcp", 0), ("digest", 0)],
        "an ICP prediction"
    );
    let stats = stdout(&canopy.cli(&["stats"]));
    assert!(
        stats.contains("false hits 1 (ICP 1, HTCP 0, DIGEST 0)"),
        "{stats}"
    );
}

/// A client at a configured sibling's address used to be served hits only, every miss a
/// 504 saying "the request said only-if-cached" (it did not). Now only a peer whose misses
/// the administrator denied (`--deny-misses`, Squid's `miss_access deny`) is, and the 504
/// says which option did it.
#[tokio::test]
async fn a_peer_is_served_hits_only_only_where_its_misses_are_denied() {
    let origin = origin().await;
    let (settings, _) = icp_settings("receive");
    let canopy = start_canopy(&settings).await;
    let add = |extra: &[&str]| {
        let mut args = vec![
            "peer",
            "add",
            "squid",
            "127.0.0.2",
            "--type",
            "sibling",
            "--http-port",
            "3128",
        ];
        args.extend_from_slice(extra);
        cli_ok(&canopy, &args);
        cli_ok(&canopy, &["reload"]);
    };
    add(&[]);
    let sibling = Some(SQUID_IP);

    let first = origin.url("/first");
    let got = request_via(canopy.addr, sibling, "GET", &first, &[])
        .await
        .unwrap();
    assert_eq!(got.status, StatusCode::OK, "a sibling's miss is served");
    assert_eq!(origin.count("/first"), 1);

    cli_ok(&canopy, &["peer", "remove", "squid"]);
    add(&["--deny-misses"]);
    let lacks = origin.url("/lacks");
    let got = request_via(canopy.addr, sibling, "GET", &lacks, &[])
        .await
        .unwrap();
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        got.text()
            .contains("peer squid may not fetch misses here (its deny_misses option)"),
        "{}",
        got.text()
    );
    assert_eq!(origin.count("/lacks"), 0);

    let holds = origin.url("/holds");
    canopy.get(&holds).await;
    let got = request_via(canopy.addr, sibling, "GET", &holds, &[])
        .await
        .unwrap();
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "object /holds");
    assert!(
        got.header("x-cache").starts_with("HIT"),
        "{:?}",
        got.headers
    );
    assert_eq!(origin.count("/holds"), 1);
}

/// An ICP datagram: header fields as given, then `payload`, the length field set to match.
fn datagram(opcode: u8, version: u8, number: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![opcode, version];
    bytes.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    bytes.extend_from_slice(&number.to_be_bytes());
    bytes.extend_from_slice(&[0; 12]);
    bytes.extend_from_slice(payload);
    bytes
}

fn query(number: u32, url: &str) -> Vec<u8> {
    let mut payload = vec![0, 0, 0, 0];
    payload.extend_from_slice(url.as_bytes());
    payload.push(0);
    datagram(1, 2, number, &payload)
}

/// The next reply on `socket`: (opcode, version, request number).
async fn reply(socket: &tokio::net::UdpSocket) -> (u8, u8, u32) {
    let mut buffer = [0u8; 2048];
    let (len, _) = tokio::time::timeout(LIMIT, socket.recv_from(&mut buffer))
        .await
        .expect("an ICP reply in time")
        .expect("recv");
    assert!(len >= 20, "reply of {len} octets");
    let number = u32::from_be_bytes([buffer[4], buffer[5], buffer[6], buffer[7]]);
    (buffer[0], buffer[1], number)
}

#[tokio::test]
async fn strangers_get_denied_and_malformed_datagrams_are_dropped_or_answered_err() {
    let (mut settings, icp_port) = icp_settings("receive");
    settings.push(("icp_allowed_clients", "127.0.0.1/32".into()));
    let canopy = start_canopy(&settings).await;
    let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), icp_port);
    let url = "http://example.com/";

    let stranger = tokio::net::UdpSocket::bind("127.0.0.3:0").await.unwrap();
    stranger.send_to(&query(7, url), target).await.unwrap();
    assert_eq!(
        reply(&stranger).await,
        (22, 2, 7),
        "DENIED, version 2, number echoed"
    );

    let child = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut wrong_length = query(1, url);
    wrong_length[3] += 5;
    let mut version_1 = query(2, url);
    version_1[1] = 1;
    for bad in [&b"too short"[..], &wrong_length, &version_1] {
        child.send_to(bad, target).await.unwrap();
    }
    let mut version_3 = query(8, url);
    version_3[1] = 3;
    child.send_to(&version_3, target).await.unwrap();
    // Loopback keeps order: nothing answered the three bad ones, the first reply is the v3's.
    assert_eq!(
        reply(&child).await,
        (3, 2, 8),
        "a version 3 query gets a version 2 MISS"
    );
    child
        .send_to(&datagram(1, 2, 9, b"\0\0\0\0http://no-terminator/"), target)
        .await
        .unwrap();
    assert_eq!(reply(&child).await, (4, 2, 9), "ERR for a URL without NUL");
    child
        .send_to(&query(10, "not a url"), target)
        .await
        .unwrap();
    assert_eq!(
        reply(&child).await,
        (4, 2, 10),
        "ERR for a URL that does not parse"
    );
    child.send_to(&query(11, url), target).await.unwrap();
    assert_eq!(
        reply(&child).await,
        (3, 2, 11),
        "the responder keeps answering"
    );

    let stats = canopy.stats().await;
    assert_eq!(stats.icp_dropped, 3);
    assert_eq!(stats.icp_answers["DENIED"], 1);
    assert_eq!(stats.icp_answers["ERR"], 2);
    assert_eq!(stats.icp_answers["MISS"], 2);
    assert_eq!(stats.icp_queries_received, 5);
}

#[tokio::test]
async fn one_multicast_query_is_answered_by_two_responders() {
    let origin = origin().await;
    let icp_port = free_udp_port().to_string();
    let responder = |ip: &'static str| {
        let icp_port = icp_port.clone();
        async move {
            Canopy::start(&[
                ("bind_address", ip),
                ("icp_mode", "receive"),
                ("icp_port", &icp_port),
                ("icp_multicast_enabled", "on"),
                ("icp_allowed_clients", "127.0.0.1/32"),
            ])
            .await
        }
    };
    let first = responder("127.0.0.11").await;
    let second = responder("127.0.0.12").await;
    let querier = Canopy::start(&[
        ("icp_mode", "send-receive"),
        ("icp_port", &icp_port),
        ("icp_multicast_enabled", "on"),
        ("icp_query_timeout_ms", "2000"),
    ])
    .await;
    for (name, responder) in [("first", &first), ("second", &second)] {
        let http = responder.addr.port().to_string();
        let host = responder.addr.ip().to_string();
        cli_ok(
            &querier,
            &[
                "peer",
                "add",
                name,
                &host,
                "--type",
                "sibling",
                "--http-port",
                &http,
                "--icp-port",
                &icp_port,
                "--multicast-responder",
            ],
        );
    }
    cli_ok(&querier, &["reload"]);

    let url = origin.url("/multicast");
    assert_eq!(querier.get(&url).await.status, StatusCode::OK);
    for (name, responder) in [("first", &first), ("second", &second)] {
        let stats = responder.stats().await;
        assert_eq!(
            stats.icp_queries_received, 1,
            "{name} got the one query once"
        );
        assert_eq!(stats.icp_answers["MISS"], 1);
        let peer = peer_stats(&querier, name).await;
        assert_eq!(
            (peer.icp_replies["MISS"], peer.icp_timeouts),
            (1, 0),
            "{name}: {peer:?}"
        );
    }
    assert_eq!(
        querier.stats().await.icp_queries_received,
        0,
        "its own query is ignored"
    );
}

#[tokio::test]
async fn reload_turns_icp_on_and_moves_its_port_with_the_same_pid() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let squid = Squid::start(&binary, "");
    let canopy = Canopy::start(&[]).await;
    let pid = canopy.pid();
    assert_eq!(canopy.status().await.unwrap().icp_listen, None);
    add_squid_peer(&canopy, &squid, "sibling", &[]);

    let first_port = free_udp_port().to_string();
    cli_ok(&canopy, &["config", "set", "icp_mode", "send-receive"]);
    cli_ok(&canopy, &["config", "set", "icp_port", &first_port]);
    cli_ok(&canopy, &["config", "set", "icp_query_timeout_ms", "2000"]);
    cli_ok(&canopy, &["reload"]);
    let status = canopy.status().await.unwrap();
    assert_eq!(status.pid, pid);
    assert_eq!(status.icp_listen, Some(format!("127.0.0.1:{first_port}")));
    let url = origin.url("/after-turning-on");
    canopy.get(&url).await;
    squid.wait_logged("UDP_MISS/", &url).await;
    assert_eq!(peer_stats(&canopy, "squid").await.icp_replies["MISS"], 1);

    let second_port = free_udp_port().to_string();
    cli_ok(&canopy, &["config", "set", "icp_port", &second_port]);
    cli_ok(&canopy, &["reload"]);
    let status = canopy.status().await.unwrap();
    assert_eq!(status.pid, pid);
    assert_eq!(status.icp_listen, Some(format!("127.0.0.1:{second_port}")));
    let url = origin.url("/after-moving");
    canopy.get(&url).await;
    squid.wait_logged("UDP_MISS/", &url).await;
    // Squid answers the address and port the query came from: the reply was matched.
    assert_eq!(peer_stats(&canopy, "squid").await.icp_replies["MISS"], 2);
    wait_for("the old ICP port to be let go", LIMIT, || async {
        std::net::UdpSocket::bind(format!("127.0.0.1:{first_port}")).is_ok()
    })
    .await;
}

#[tokio::test]
async fn peers_are_added_listed_removed_and_imported_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| common::canopy_cli(dir.path(), args);
    let added = cli(&[
        "peer",
        "add",
        "east",
        "10.0.0.2",
        "--type",
        "sibling",
        "--http-port",
        "3128",
        "--icp-port",
        "3130",
        "--proxy-only",
    ]);
    assert!(added.status.success(), "{}", stderr(&added));
    let listed = stdout(&cli(&["peer", "list"]));
    assert!(
        listed.contains("east sibling 10.0.0.2 http 3128 icp 3130 weight 1 proxy-only"),
        "{listed}"
    );

    let bad = dir.path().join("bad.conf");
    std::fs::write(
        &bad,
        "cache_peer up.example.net parent 3128 3130 no-query\ncache_peer x parent 3128 3130 login=PASS\nh:1.2.3.4:7:1:2:0:0.0.0.0:1:\n",
    )
    .unwrap();
    let refused = cli(&["peer", "import", bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    let report = stderr(&refused);
    assert!(report.contains("bad.conf:3: peer type"), "{report}");
    assert!(
        !report.contains("bad.conf:2"),
        "an option is not a fault: {report}"
    );
    assert!(report.contains("nothing was imported"), "{report}");
    assert!(!stdout(&cli(&["peer", "list"])).contains("up.example.net"));

    let good = dir.path().join("icp.config");
    std::fs::write(
        &good,
        "# Traffic Server\nup:10.0.0.9:1:8080:3130:0:0.0.0.0:1:\ncache_peer 10.0.0.3 sibling 3128 3130 name=west no-digest round-robin\nhttp_port 3128\n",
    )
    .unwrap();
    let imported = cli(&["peer", "import", good.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    let said = stdout(&imported);
    assert!(
        said.contains(
            "icp.config:3: cache_peer 10.0.0.3: option round-robin applies to parents only"
        ),
        "{said}"
    );
    assert!(
        said.contains("icp.config:4: http_port is not a cache_peer line"),
        "{said}"
    );
    assert!(
        said.contains("2 peers read, 2 lines or options ignored"),
        "{said}"
    );
    let listed = stdout(&cli(&["peer", "list"]));
    assert!(listed.contains("up parent 10.0.0.9 http 8080"), "{listed}");
    assert!(listed.contains("west sibling 10.0.0.3"), "{listed}");

    let removed = cli(&["peer", "remove", "east"]);
    assert!(removed.status.success());
    assert!(!stdout(&cli(&["peer", "list"])).contains("east"));
    let missing = cli(&["peer", "remove", "east"]);
    assert_eq!(missing.status.code(), Some(2));
}

/// Squid's own counters of one peer, from its cache manager's `server_list`: ICP queries
/// sent (`PINGS SENT`), replies by opcode (its histogram, `ICP_HIT` as `HIT`) and HTTP
/// requests sent (`FETCHES`).
struct SquidPeerCounts {
    pings_sent: u64,
    replies: std::collections::BTreeMap<String, u64>,
    fetches: u64,
}

async fn squid_peer_counts(squid: &Squid, peer: &str) -> SquidPeerCounts {
    // Squid knows its internal URLs by its visible_hostname.
    let url = format!(
        "http://squid-under-test:{}/squid-internal-mgr/server_list",
        squid.http.port()
    );
    let list = request_via(squid.http, None, "GET", &url, &[])
        .await
        .unwrap()
        .text();
    let section = list
        .split("\n\n")
        .find(|s| {
            s.lines()
                .any(|l| l.starts_with("Sibling") && l.ends_with(peer))
        })
        .unwrap_or_else(|| panic!("no peer {peer} in squid's server_list:\n{list}"));
    let number = |field: &str| {
        let line = section.lines().find(|l| l.starts_with(field));
        let value = line.and_then(|l| l.split(':').nth(1)?.split_whitespace().next());
        value.and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    let replies = section
        .lines()
        .filter_map(|l| {
            let (opcode, count) = l.trim().split_once(':')?;
            let opcode = opcode.trim().strip_prefix("ICP_")?;
            Some((
                opcode.to_owned(),
                count.split_whitespace().next()?.parse().ok()?,
            ))
        })
        .collect();
    SquidPeerCounts {
        pings_sent: number("PINGS SENT"),
        replies,
        fetches: number("FETCHES"),
    }
}

/// The responder's side: a real Squid child queries Canopy as its sibling; Canopy's counts
/// for that client (by address, named as the configured peer) are what Squid's own
/// counters say it sent and received, and a stranger's queries are listed DENIED with its
/// address.
#[tokio::test]
async fn per_client_counts_match_what_a_squid_child_sent_and_strangers_are_listed_denied() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let (settings, icp_port) = icp_settings("receive");
    let canopy = start_canopy(&settings).await;
    // No digest: Squid's fetches of it are no requests its access log or FETCHES show.
    let squid = Squid::start(
        &binary,
        &format!(
            "cache_peer 127.0.0.1 sibling {} {icp_port} name=canopy no-digest\nicp_query_timeout 2000\n",
            canopy.addr.port()
        ),
    );
    add_squid_peer(&canopy, &squid, "sibling", &[]);
    squid.fetches_from(&canopy, &origin).await;
    for i in 0..4 {
        let held = origin.url(&format!("/client-held-{i}"));
        canopy.get(&held).await;
        request_via(squid.http, None, "GET", &held, &[])
            .await
            .unwrap();
        let lacks = origin.url(&format!("/client-lacks-{i}"));
        request_via(squid.http, None, "GET", &lacks, &[])
            .await
            .unwrap();
        squid.wait_logged("HIER_DIRECT/", &lacks).await;
    }
    let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), icp_port);
    let stranger = tokio::net::UdpSocket::bind("127.0.0.3:0").await.unwrap();
    for number in [1, 2] {
        stranger
            .send_to(&query(number, "http://example.com/"), target)
            .await
            .unwrap();
        assert_eq!(reply(&stranger).await.0, 22, "DENIED");
    }

    let sibling_hits = squid
        .access_log()
        .lines()
        .filter(|l| l.contains("SIBLING_HIT/127.0.0.1"))
        .count();
    let logged_for_squid = || {
        let log = canopy.access_log();
        let lines: Vec<Vec<String>> = log
            .lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .filter(|fields| fields.get(2).map(String::as_str) == Some("127.0.0.2"))
            .collect();
        let bytes: u64 = lines
            .iter()
            .filter_map(|f| f.get(4)?.parse::<u64>().ok())
            .sum();
        (lines.len(), bytes)
    };
    wait_for("canopy to log every request of squid", LIMIT, || async {
        logged_for_squid().0 == sibling_hits
    })
    .await;
    let squid_said = squid_peer_counts(&squid, "canopy").await;
    let stats = canopy.stats().await;
    let row = |ip: [u8; 4]| {
        let ip = IpAddr::from(ip);
        stats
            .clients
            .iter()
            .find(|c| c.address == Some(ip))
            .cloned()
    };
    let child = row([127, 0, 0, 2]).expect("a row for squid");
    assert_eq!(child.peer.as_deref(), Some("squid"));
    assert!(squid_said.pings_sent >= 9, "{:?}", squid_said.replies);
    assert_eq!(child.icp_queries, squid_said.pings_sent, "{child:?}");
    let answered: std::collections::BTreeMap<String, u64> = child
        .icp_answers
        .clone()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(answered, squid_said.replies, "{child:?}");
    assert_eq!(child.objects, squid_said.fetches);
    let sibling_hits = sibling_hits as u64;
    assert_eq!((child.objects, child.hits), (sibling_hits, sibling_hits));
    assert_eq!(child.bytes, logged_for_squid().1);

    let denied = row([127, 0, 0, 3]).expect("a row for the stranger");
    assert_eq!((denied.icp_queries, denied.icp_answers["DENIED"]), (2, 2));
    assert_eq!(denied.peer, None);
    assert!(
        row([127, 0, 0, 1]).is_none(),
        "an ordinary client is not counted"
    );
    let queries: u64 = stats.clients.iter().map(|c| c.icp_queries).sum();
    assert_eq!(queries, stats.icp_queries_received);

    let table = cli_ok(&canopy, &["stats", "--clients"]);
    let line = |ip: &str| {
        table
            .lines()
            .find(|l| l.starts_with(ip))
            .unwrap_or_else(|| panic!("no line for {ip}:\n{table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let squid_line = line("127.0.0.2");
    assert_eq!(squid_line[1], "squid", "{table}");
    assert_eq!(squid_line[2], squid_said.pings_sent.to_string(), "{table}");
    let stranger_line = line("127.0.0.3");
    assert_eq!(&stranger_line[1..3], ["-", "2"], "{table}");
    assert_eq!(stranger_line[6], "2", "the DENIED column: {table}");
}

/// `canopy stats --clients` lists the ICP clients and the peers and children served over
/// HTTP, as a table and as JSON; an ordinary HTTP client is not among them.
#[tokio::test]
async fn stats_clients_lists_children_and_strangers_and_not_ordinary_clients() {
    let origin = origin().await;
    let (mut settings, icp_port) = icp_settings("receive");
    settings.push(("icp_allowed_clients", "127.0.0.4/32".into()));
    let canopy = start_canopy(&settings).await;
    let said = cli_ok(&canopy, &["stats", "--clients"]);
    assert!(said.contains("no client has sent an ICP query"), "{said}");

    let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), icp_port);
    let url = origin.url("/for-the-child");
    let child = tokio::net::UdpSocket::bind("127.0.0.4:0").await.unwrap();
    child.send_to(&query(1, &url), target).await.unwrap();
    assert_eq!(reply(&child).await.0, 3, "MISS");
    let fetched = request_via(canopy.addr, Some([127, 0, 0, 4].into()), "GET", &url, &[])
        .await
        .unwrap();
    assert_eq!(fetched.text(), "object /for-the-child");
    child.send_to(&query(2, &url), target).await.unwrap();
    assert_eq!(reply(&child).await.0, 2, "HIT");
    let stranger = tokio::net::UdpSocket::bind("127.0.0.3:0").await.unwrap();
    stranger.send_to(&query(3, &url), target).await.unwrap();
    assert_eq!(reply(&stranger).await.0, 22, "DENIED");
    canopy.get(&url).await;

    let child_served = |clients: &[canopy_config::stats::ClientSnapshot]| {
        clients
            .iter()
            .any(|c| c.address == Some([127, 0, 0, 4].into()) && c.objects == 1)
    };
    wait_for("the child's response to be counted", LIMIT, || async {
        child_served(&canopy.stats().await.clients)
    })
    .await;
    let table = cli_ok(&canopy, &["stats", "--clients"]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 3, "a header and two clients:\n{table}");
    assert_eq!(
        lines[0][..8],
        [
            "CLIENT",
            "PEER",
            "QUERIES",
            "HIT",
            "MISS",
            "MISS_NOFETCH",
            "DENIED",
            "ERR"
        ]
    );
    let object = "object /for-the-child".len().to_string();
    assert_eq!(
        lines[1][..11],
        [
            "127.0.0.3",
            "-",
            "1",
            "0",
            "0",
            "0",
            "1",
            "0",
            "0",
            "0",
            "0"
        ],
        "{table}"
    );
    assert_eq!(
        lines[2][..11],
        [
            "127.0.0.4",
            "-",
            "2",
            "1",
            "1",
            "0",
            "0",
            "0",
            "1",
            "0",
            &object
        ],
        "{table}"
    );

    let json = cli_ok(&canopy, &["stats", "--clients", "--json"]);
    let clients: Vec<canopy_config::stats::ClientSnapshot> =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(clients.len(), 2);
    assert!(child_served(&clients), "{json}");
}

/// Adds `peer` (another Canopy on 127.0.0.1) to `canopy` as a sibling called `name`.
fn add_canopy_sibling(canopy: &Canopy, name: &str, peer: &Canopy, icp_port: u16) {
    add_sibling(canopy, name, peer.addr.port(), icp_port);
}

/// Adds the sibling `name` on 127.0.0.1 to `canopy` and applies it. They exchange no cache
/// digests: a digest fetch is an HTTP request of its own, and these tests count the HTTP
/// requests an ICP answer saves.
fn add_sibling(canopy: &Canopy, name: &str, http_port: u16, icp_port: u16) {
    let (http, icp) = (http_port.to_string(), icp_port.to_string());
    cli_ok(
        canopy,
        &[
            "peer",
            "add",
            name,
            "127.0.0.1",
            "--type",
            "sibling",
            "--http-port",
            &http,
            "--icp-port",
            &icp,
            "--no-digest",
        ],
    );
    cli_ok(canopy, &["reload"]);
}

#[tokio::test]
async fn hit_obj_between_two_canopies_serves_the_object_with_no_http_fetch() {
    let origin = origin().await;
    let (mut holder_settings, holder_icp) = icp_settings("receive");
    holder_settings.push(("icp_hit_obj", "on".to_owned()));
    let holder = start_canopy(&holder_settings).await;
    let (mut asker_settings, asker_icp) = icp_settings("send-receive");
    asker_settings.push(("icp_hit_obj", "on".to_owned()));
    let asker = start_canopy(&asker_settings).await;
    add_canopy_sibling(&holder, "asker", &asker, asker_icp);
    add_canopy_sibling(&asker, "holder", &holder, holder_icp);

    let url = origin.url("/inline");
    assert_eq!(holder.get(&url).await.status, StatusCode::OK);
    let requests_at_holder = holder.stats().await.requests;
    let got = asker.get(&url).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "object /inline");
    assert_eq!(
        origin.count("/inline"),
        1,
        "the origin saw one request only"
    );
    assert_eq!(
        holder.stats().await.requests,
        requests_at_holder,
        "no HTTP request reached the holder: the object came inside the ICP reply"
    );
    asker.wait_logged("SIBLING_HIT/127.0.0.1", &url).await;
    let at_asker = peer_stats(&asker, "holder").await;
    assert_eq!(
        (
            at_asker.icp_hit_obj_received,
            at_asker.icp_replies["HIT"],
            at_asker.hits_served
        ),
        (1, 1, 1),
        "{at_asker:?}"
    );
    assert_eq!(peer_stats(&holder, "asker").await.icp_hit_obj_sent, 1);
    // Stored like any response from a peer: the next request is the asker's own hit.
    assert_eq!(
        asker.get(&url).await.header("x-cache").split(' ').next(),
        Some("HIT")
    );
    let stats = stdout(&asker.cli(&["stats"]));
    assert!(stats.contains("HIT_OBJ sent 0, received 1"), "{stats}");
}

#[tokio::test]
async fn squid_asks_without_hit_obj_and_answers_it_with_plain_hit_both_ways() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let (mut settings, icp_port) = icp_settings("send-receive");
    settings.push(("icp_hit_obj", "on".to_owned()));
    let (canopy, squid) = siblings_with_squid(&binary, &settings, icp_port).await;

    // Canopy asks Squid with the HIT_OBJ flag: Squid answers HIT and serves over HTTP.
    let squid_holds = origin.url("/squid-holds");
    request_via(squid.http, None, "GET", &squid_holds, &[])
        .await
        .unwrap();
    let got = canopy.get(&squid_holds).await;
    assert_eq!(got.text(), "object /squid-holds");
    assert_eq!(origin.count("/squid-holds"), 1);
    squid.wait_logged("UDP_HIT/", &squid_holds).await;
    squid.wait_logged("_HIT/200", &squid_holds).await;

    // Squid asks Canopy without the flag: Canopy answers plain HIT, and Squid fetches.
    squid.fetches_from(&canopy, &origin).await;
    let peer = peer_stats(&canopy, "squid").await;
    assert_eq!(
        (peer.icp_hit_obj_sent, peer.icp_hit_obj_received),
        (0, 0),
        "{peer:?}"
    );
    assert!(
        peer.icp_replies["HIT"] >= 1 && peer.hits_served >= 1,
        "{peer:?}"
    );
    assert!(canopy.stats().await.icp_answers["HIT"] >= 1);
}

/// A sibling scripted in the test: it answers every ICP query HIT_OBJ with the object
/// `object_for` makes of the query's URL, and serves the object over HTTP as any sibling
/// would, but for paths with "gone" (504, as to `only-if-cached` after an eviction).
/// Returns its ICP port and its HTTP side.
async fn scripted_hit_obj_sibling(object_for: fn(&str) -> Vec<u8>) -> (u16, Origin) {
    use canopy_proxy::icp::codec::IcpMessage;
    let http = Origin::start(|seen| {
        let mut response = Response::new(full(format!("object {}", seen.path)));
        if seen.path.contains("gone") {
            *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        }
        response
    })
    .await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buffer = [0u8; 16384];
        while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
            let Ok(query) = IcpMessage::decode(&buffer[..len]) else {
                continue;
            };
            let url = query.payload.url().to_owned();
            let reply = IcpMessage::hit_obj(query.request_number, &url, object_for(&url));
            let _ = socket.send_to(&reply.encode().unwrap(), from).await;
        }
    });
    (port, http)
}

/// An inline object that fails the asker's checks is the peer's false hit, counted for ICP
/// like any other; the peer is then asked over HTTP, and that fetch counts once at most.
#[tokio::test]
async fn a_hit_obj_whose_object_fails_the_checks_is_counted_a_false_hit() {
    let origin = origin().await;
    let (peer_icp, peer_http) = scripted_hit_obj_sibling(|url| {
        if url.ends_with("/framing") || url.ends_with("/gone") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nCache-Control: max-age=60\r\n\r\nshort"
                .to_vec()
        } else {
            b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 2\r\n\r\nno".to_vec()
        }
    })
    .await;
    let (mut settings, _) = icp_settings("send-receive");
    settings.push(("icp_hit_obj", "on".to_owned()));
    let canopy = start_canopy(&settings).await;
    add_sibling(&canopy, "scripted", peer_http.addr.port(), peer_icp);

    for path in ["/framing", "/not-storable"] {
        let url = origin.url(path);
        let got = canopy.get(&url).await;
        assert_eq!(
            got.text(),
            format!("object {path}"),
            "served by the sibling over HTTP"
        );
        assert_eq!(peer_http.count(path), 1);
        canopy.wait_logged("SIBLING_HIT/127.0.0.1", &url).await;
    }
    assert_eq!(origin.count("/framing") + origin.count("/not-storable"), 0);
    // The same answer proves false twice over (a bad object, then a 504): one false hit.
    let gone = origin.url("/gone");
    assert_eq!(canopy.get(&gone).await.text(), "object /gone");
    assert_eq!((peer_http.count("/gone"), origin.count("/gone")), (1, 1));
    canopy.wait_logged("HIER_DIRECT/", &gone).await;
    let peer = peer_stats(&canopy, "scripted").await;
    assert_eq!(
        (peer.icp_hit_obj_received, peer.false_hits, peer.hits_served),
        (3, 3, 2),
        "{peer:?}"
    );
    assert_eq!(
        peer.false_hits_by_method(),
        [("icp", 3), ("htcp", 0), ("digest", 0)]
    );
}
