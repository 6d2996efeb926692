//! HTCP peering end to end with a real Squid on both sides (DESIGN.md §11): TST queries in
//! both of Squid's layouts, the Vary case that ICP gets wrong and HTCP gets right, and CLR
//! sent and obeyed both ways. Squid's access log is the witness of what Squid did.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use canopy_proxy::htcp::codec::{
    ClrReason, HtcpLayout, HtcpMessage, HtcpOpcode, OpData, ResponseCode, Specifier,
};
use hyper::{Response, StatusCode};
use tokio::net::UdpSocket;

use common::squid::{free_udp_port_on, squid_binary, Squid, SQUID_IP};
use common::{cli_ok, free_udp_port, full, peer_stats, request_via, wait_for, Canopy, Origin};

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

/// A Canopy that queries its peers, with HTCP on a free port; returns the port too.
async fn start_canopy(extra: &[(&str, &str)]) -> (Canopy, u16) {
    let htcp_port = free_udp_port().to_string();
    let icp_port = free_udp_port().to_string();
    let mut settings = vec![
        ("icp_mode", "send-receive"),
        ("icp_port", icp_port.as_str()),
        ("icp_query_timeout_ms", "2000"),
        ("htcp_port", htcp_port.as_str()),
    ];
    settings.extend_from_slice(extra);
    (Canopy::start(&settings).await, htcp_port.parse().unwrap())
}

/// Squid with HTCP on, answering and obeying CLR from loopback, PURGE enabled.
fn start_squid(binary: &std::path::Path, extra: &str) -> (Squid, u16) {
    let htcp_port = free_udp_port_on(SQUID_IP);
    let squid = Squid::start(
        binary,
        &format!(
            "htcp_port {htcp_port}\nhtcp_access allow loopback\nhtcp_clr_access allow loopback\n\
             acl purge method PURGE\nhttp_access allow purge loopback\n{extra}"
        ),
    );
    (squid, htcp_port)
}

/// Squid with `canopy` as its sibling asked over HTCP (`option`: `htcp`, `htcp=oldsquid`).
fn squid_asking(binary: &std::path::Path, canopy: &Canopy, htcp_port: u16, option: &str) -> Squid {
    let peer = format!(
        "cache_peer 127.0.0.1 sibling {} {htcp_port} {option} name=canopy\nicp_query_timeout 1000\n",
        canopy.addr.port()
    );
    start_squid(binary, &peer).0
}

/// Adds Squid as a sibling named `name` asked at `query_port` with `options`, and applies it.
fn add_squid_peer(canopy: &Canopy, squid: &Squid, name: &str, query_port: u16, options: &[&str]) {
    let (http, port) = (squid.http.port().to_string(), query_port.to_string());
    let mut args = vec![
        "peer",
        "add",
        name,
        "127.0.0.2",
        "--type",
        "sibling",
        "--http-port",
        &http,
        "--icp-port",
        &port,
    ];
    args.extend_from_slice(options);
    cli_ok(canopy, &args);
    cli_ok(canopy, &["reload"]);
}

#[tokio::test]
async fn canopy_asks_squid_over_htcp_in_both_layouts() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let (squid, htcp_port) = start_squid(&binary, "");
    let (canopy, _) = start_canopy(&[]).await;
    for (name, layout) in [("squid", "on"), ("old-squid", "oldsquid")] {
        let held = origin.url(&format!("/held-{name}"));
        let absent = origin.url(&format!("/absent-{name}"));
        request_via(squid.http, None, "GET", &held, &[])
            .await
            .unwrap();
        if layout == "on" {
            add_squid_peer(&canopy, &squid, name, htcp_port, &["--htcp", layout]);
        } else {
            // The old layout as a Squid admin writes it, through the importer.
            cli_ok(&canopy, &["peer", "remove", "squid"]);
            let file = canopy.data_dir().join("peers.conf");
            let line = format!(
                "cache_peer 127.0.0.2 sibling {} {htcp_port} htcp={layout} name={name}\n",
                squid.http.port()
            );
            std::fs::write(&file, line).unwrap();
            cli_ok(&canopy, &["peer", "import", file.to_str().unwrap()]);
            cli_ok(&canopy, &["reload"]);
        }

        let got = canopy.get(&held).await;
        assert_eq!(
            (got.status, got.text()),
            (StatusCode::OK, format!("object /held-{name}"))
        );
        assert_eq!(
            origin.count(&format!("/held-{name}")),
            1,
            "{name}: fetched from Squid"
        );
        squid.wait_logged("UDP_HIT/", &held).await;
        canopy.wait_logged("SIBLING_HIT/127.0.0.2", &held).await;

        assert_eq!(canopy.get(&absent).await.status, StatusCode::OK);
        squid.wait_logged("UDP_MISS/", &absent).await;
        canopy.wait_logged("HIER_DIRECT/", &absent).await;
        let peer = peer_stats(&canopy, name).await;
        assert_eq!(
            (
                peer.htcp_queries,
                peer.htcp_hits,
                peer.htcp_misses,
                peer.icp_queries
            ),
            (2, 1, 1, 0),
            "{name}: asked over HTCP only"
        );
        assert_eq!(peer.hits_served, 1);
    }
}

#[tokio::test]
async fn squid_asks_canopy_over_htcp() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let (canopy, htcp_port) = start_canopy(&[("htcp_access", "127.0.0.2")]).await;
    let squid = squid_asking(&binary, &canopy, htcp_port, "htcp");
    squid.fetches_from(&canopy, &origin).await;

    let held = origin.url("/held-by-canopy");
    canopy.get(&held).await;
    let got = request_via(squid.http, None, "GET", &held, &[])
        .await
        .unwrap();
    assert_eq!(got.status, StatusCode::OK);
    squid.wait_logged("SIBLING_HIT/127.0.0.1", &held).await;
    assert_eq!(origin.count("/held-by-canopy"), 1);

    let absent = origin.url("/not-at-canopy");
    request_via(squid.http, None, "GET", &absent, &[])
        .await
        .unwrap();
    squid.wait_logged("HIER_DIRECT/", &absent).await;
    let htcp = canopy.stats().await.htcp;
    assert!(htcp.answered_hit >= 2, "warm-up and held: {htcp:?}");
    assert_eq!((htcp.answered_miss, htcp.denied), (1, 0), "{htcp:?}");
}

/// Squid 5.7 sends its old-layout TST with message id 0 and remembers the real id, so it
/// can take no reply to it: Canopy answers in the old layout all the same, and Squid goes
/// direct when its query times out.
#[tokio::test]
async fn squid_asks_canopy_in_the_old_layout_and_canopy_answers() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let (canopy, htcp_port) = start_canopy(&[("htcp_access", "127.0.0.2")]).await;
    let squid = squid_asking(&binary, &canopy, htcp_port, "htcp=oldsquid");
    let held = origin.url("/held-by-canopy");
    canopy.get(&held).await;
    wait_for("canopy to answer squid's old-layout TST", LIMIT, || async {
        request_via(squid.http, None, "GET", &held, &[])
            .await
            .unwrap();
        canopy.stats().await.htcp.answered_hit > 0
    })
    .await;
    squid.wait_logged("TIMEOUT_HIER_DIRECT/", &held).await;
}

/// Squid and a second Canopy hold variant "a" of an object that varies on X-Variant; Canopy
/// asks Squid over ICP and the other Canopy over HTCP. Asked for variant "b", ICP (the URL
/// only) says HIT and is wrong; HTCP (with the request's headers) says MISS. The false-hit
/// counters show it. (Squid itself answers an HTCP TST from the Vary marker it keeps, without
/// the variant: HIT for every variant, so its HTCP answers cannot show the difference.)
#[tokio::test]
async fn htcp_sees_the_variant_where_icp_gives_a_false_hit() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let (squid, _) = start_squid(&binary, "");
    let (holder, holder_htcp) = start_canopy(&[("htcp_access", "127.0.0.1")]).await;
    let url = origin.url("/vary-me");
    request_via(squid.http, None, "GET", &url, &[("x-variant", "a")])
        .await
        .unwrap();
    holder.request("GET", &url, &[("x-variant", "a")]).await;
    let (canopy, _) = start_canopy(&[]).await;
    add_squid_peer(&canopy, &squid, "by-icp", squid.icp_port, &[]);
    let (http, htcp) = (holder.addr.port().to_string(), holder_htcp.to_string());
    cli_ok(
        &canopy,
        &[
            "peer",
            "add",
            "by-htcp",
            "127.0.0.1",
            "--type",
            "sibling",
            "--http-port",
            &http,
            "--icp-port",
            &htcp,
            "--htcp",
            "on",
        ],
    );
    cli_ok(&canopy, &["reload"]);

    let got = canopy.request("GET", &url, &[("x-variant", "b")]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(origin.count("/vary-me"), 3, "variant b from the origin");
    squid.wait_logged("UDP_HIT/", &url).await;
    wait_for("the HTCP reply counted", LIMIT, || async {
        let by_htcp = peer_stats(&canopy, "by-htcp").await;
        by_htcp.htcp_hits + by_htcp.htcp_misses == 1
    })
    .await;
    let by_icp = peer_stats(&canopy, "by-icp").await;
    let by_htcp = peer_stats(&canopy, "by-htcp").await;
    assert_eq!((by_icp.icp_replies["HIT"], by_icp.false_hits), (1, 1));
    assert_eq!(
        (
            by_htcp.htcp_misses,
            by_htcp.htcp_hits,
            by_htcp.false_hits_htcp
        ),
        (1, 0, 0)
    );
    assert_eq!(holder.stats().await.htcp.answered_miss, 1);

    // Variant "a": the HTCP peer holds it and says so.
    let got = canopy.request("GET", &url, &[("x-variant", "a")]).await;
    assert_eq!(got.status, StatusCode::OK);
    wait_for("the HTCP HIT counted", LIMIT, || async {
        peer_stats(&canopy, "by-htcp").await.htcp_hits == 1
    })
    .await;
    assert_eq!(holder.stats().await.htcp.answered_hit, 1);
}

#[tokio::test]
async fn a_purge_at_canopy_clears_the_object_at_squid() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let (squid, htcp_port) = start_squid(&binary, "");
    let (canopy, _) = start_canopy(&[]).await;
    let url = origin.url("/cleared");
    request_via(squid.http, None, "GET", &url, &[])
        .await
        .unwrap();
    canopy.get(&url).await;
    add_squid_peer(&canopy, &squid, "squid", htcp_port, &["--htcp", "on"]);

    let purged = canopy.request("PURGE", &url, &[]).await;
    assert_eq!(purged.status, StatusCode::OK);
    squid.wait_logged("UDP_HIT/000 0 HTCP_CLR", &url).await;
    assert_eq!(canopy.stats().await.htcp.clr_sent, 1);
    let again = request_via(squid.http, None, "GET", &url, &[])
        .await
        .unwrap();
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(origin.count("/cleared"), 3, "Squid fetched it anew");
    squid.wait_logged("TCP_MISS/", &url).await;
}

/// `url` fetched through Canopy and through Squid, so both hold it, then purged at Squid.
async fn purged_at_squid(canopy: &Canopy, squid: &Squid, url: &str) {
    canopy.get(url).await;
    request_via(squid.http, None, "GET", url, &[])
        .await
        .unwrap();
    let purged = request_via(squid.http, None, "PURGE", url, &[])
        .await
        .unwrap();
    assert_eq!(purged.status, StatusCode::OK);
}

#[tokio::test]
async fn a_purge_at_squid_clears_the_object_at_canopy_when_allowed() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let (canopy, htcp_port) = start_canopy(&[("htcp_access", "127.0.0.2")]).await;
    let squid = squid_asking(&binary, &canopy, htcp_port, "htcp");
    let purge_both = |path: &'static str| {
        let url = origin.url(path);
        let (canopy, squid) = (&canopy, &squid);
        async move {
            purged_at_squid(canopy, squid, &url).await;
            url
        }
    };
    // Refused by default: htcp_clr_access is empty.
    let kept = purge_both("/kept").await;
    wait_for("the CLR to be refused", LIMIT, || async {
        canopy.stats().await.htcp.denied == 1
    })
    .await;
    let fetched_before = origin.count("/kept");
    canopy.get(&kept).await;
    assert_eq!(origin.count("/kept"), fetched_before, "still held");

    canopy.reconfigure(&[("htcp_clr_access", "127.0.0.2")]);
    let cleared = purge_both("/cleared-here").await;
    wait_for("the CLR to be obeyed", LIMIT, || async {
        canopy.stats().await.htcp.clr_purged == 1
    })
    .await;
    let fetched_before = origin.count("/cleared-here");
    canopy.get(&cleared).await;
    assert_eq!(
        origin.count("/cleared-here"),
        fetched_before + 1,
        "fetched anew"
    );
}

/// Asks the HTCP port at `to` about `url` with a TST from 127.0.0.1; whether it said HIT.
async fn tst_says_hit(to: SocketAddr, url: &str) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let query = HtcpMessage::tst_query(HtcpLayout::Rfc, 7, Specifier::get(url, Vec::new()));
    socket.send_to(&query.encode().unwrap(), to).await.unwrap();
    let mut buffer = [0; 9000];
    let (len, _) = tokio::time::timeout(LIMIT, socket.recv_from(&mut buffer))
        .await
        .expect("a TST reply in time")
        .unwrap();
    let reply = HtcpMessage::decode(&buffer[..len]).expect("a reply that decodes");
    assert_eq!(reply.msg_id, 7);
    reply.response == ResponseCode::ZERO
}

/// Whether nothing listens for datagrams at `to`: the port unreachable that answers a
/// datagram is reported on a connected socket.
async fn no_socket_at(to: SocketAddr) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(to).await.unwrap();
    socket.send(b"anyone?").await.unwrap();
    let mut buffer = [0; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buffer)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[tokio::test]
async fn tst_answers_hit_for_a_fresh_object_held_only_on_disk() {
    let origin = origin().await;
    let (mut canopy, htcp_port) = start_canopy(&[("htcp_access", "127.0.0.1")]).await;
    let htcp = SocketAddr::from(([127, 0, 0, 1], htcp_port));
    let url = origin.url("/on-disk");
    assert_eq!(canopy.get(&url).await.status, StatusCode::OK);
    wait_for("the object written to disk", LIMIT, || async {
        canopy.stats().await.disk.is_some_and(|d| d.writes == 1)
    })
    .await;
    assert!(tst_says_hit(htcp, &url).await, "held in memory");
    canopy.kill();
    canopy.restart().await;
    // What is on disk is learnt in the background after the start.
    wait_for("HTCP HIT for an object on disk only", LIMIT, || async {
        tst_says_hit(htcp, &url).await
    })
    .await;
    assert!(!tst_says_hit(htcp, &origin.url("/absent")).await);
    assert_eq!(canopy.stats().await.htcp.answered_hit, 1);
    assert_eq!(origin.count("/on-disk"), 1);
}

/// Whether the ICP port at `to` answers a query from 127.0.0.1.
async fn icp_answers(to: SocketAddr) -> bool {
    use canopy_proxy::icp::codec::IcpMessage;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let query = IcpMessage::query(9, "http://example.com/");
    socket.send_to(&query.encode().unwrap(), to).await.unwrap();
    let mut buffer = [0; 2048];
    let (len, _) = tokio::time::timeout(LIMIT, socket.recv_from(&mut buffer))
        .await
        .expect("an ICP reply in time")
        .unwrap();
    IcpMessage::decode(&buffer[..len]).is_ok_and(|reply| reply.request_number == 9)
}

/// ICP and HTCP follow `bind_address` on a reload that keeps their ports: from every
/// address to 127.0.0.1 (which 0.0.0.0 overlaps), and back.
#[tokio::test]
async fn a_new_bind_address_moves_the_htcp_and_icp_sockets_on_the_same_ports() {
    let (canopy, htcp_port) = start_canopy(&[
        ("bind_address", ""),
        ("htcp_access", "127.0.0.1"),
        ("icp_allowed_clients", "127.0.0.1/32"),
    ])
    .await;
    let icp_port: u16 = cli_ok(&canopy, &["config", "get", "icp_port"])
        .trim()
        .parse()
        .unwrap();
    let at = |ip: [u8; 4], port| SocketAddr::from((ip, port));
    let url = "http://example.com/";
    assert!(!tst_says_hit(at([127, 0, 0, 2], htcp_port), url).await);
    let version = canopy.status().await.unwrap().config_version;

    canopy.reconfigure(&[("bind_address", "127.0.0.1")]);
    for port in [htcp_port, icp_port] {
        wait_for("the sockets on every address to close", LIMIT, || async {
            no_socket_at(at([127, 0, 0, 2], port)).await
        })
        .await;
    }
    assert!(!tst_says_hit(at([127, 0, 0, 1], htcp_port), url).await);
    assert!(icp_answers(at([127, 0, 0, 1], icp_port)).await);

    canopy.reconfigure(&[("bind_address", "")]);
    assert!(!tst_says_hit(at([127, 0, 0, 2], htcp_port), url).await);
    assert!(icp_answers(at([127, 0, 0, 2], icp_port)).await);
    assert_eq!(canopy.status().await.unwrap().config_version, version + 2);
}

/// A peer played by the test: a socket on `ip` that HTCP datagrams are sent to.
async fn htcp_listener(ip: [u8; 4]) -> UdpSocket {
    UdpSocket::bind(SocketAddr::from((ip, 0))).await.unwrap()
}

/// The next CLR `socket` receives: its reason and URL.
async fn next_clr(socket: &UdpSocket) -> (ClrReason, String) {
    let mut buffer = [0; 9000];
    let (len, _) = tokio::time::timeout(LIMIT, socket.recv_from(&mut buffer))
        .await
        .expect("a CLR in time")
        .unwrap();
    let message = HtcpMessage::decode(&buffer[..len]).expect("a CLR that decodes");
    assert_eq!(message.opcode, HtcpOpcode::Clr, "{message:?}");
    let OpData::Clear { reason, specifier } = message.op_data else {
        panic!("{message:?}");
    };
    (reason, specifier.url)
}

/// Adds the test's `socket` as an HTCP sibling `name` that is never queried, with `options`.
fn add_listening_peer(canopy: &Canopy, name: &str, socket: &UdpSocket, options: &[&str]) {
    let addr = socket.local_addr().unwrap();
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    let mut args = vec![
        "peer",
        "add",
        name,
        &host,
        "--type",
        "sibling",
        "--icp-port",
        &port,
        "--htcp",
        "on",
        "--no-query",
    ];
    args.extend_from_slice(options);
    cli_ok(canopy, &args);
}

/// Gets `url` through `canopy`, so that it holds it, then sends `method` for it (200).
async fn held_then(canopy: &Canopy, method: &str, url: &str) {
    canopy.get(url).await;
    let answered = canopy.request(method, url, &[]).await;
    assert_eq!(answered.status, StatusCode::OK, "{method} {url}");
}

/// Squid's `htcp=no-purge-clr`: the peer hears of invalidations, not of PURGEs.
#[tokio::test]
async fn a_no_purge_clr_peer_is_sent_the_clr_of_an_invalidation_not_of_a_purge() {
    let origin = origin().await;
    let (canopy, _) = start_canopy(&[]).await;
    let every = htcp_listener([127, 0, 0, 3]).await;
    let no_purge = htcp_listener([127, 0, 0, 4]).await;
    add_listening_peer(&canopy, "every", &every, &[]);
    add_listening_peer(&canopy, "no-purge", &no_purge, &["--no-purge-clr"]);
    cli_ok(&canopy, &["reload"]);
    let listed = cli_ok(&canopy, &["peer", "list"]);
    assert!(listed.contains("no-purge-clr"), "{listed}");

    let purged = origin.url("/purged");
    held_then(&canopy, "PURGE", &purged).await;
    assert_eq!(
        next_clr(&every).await,
        (ClrReason::Unspecified, purged.clone())
    );

    let posted = origin.url("/posted");
    held_then(&canopy, "POST", &posted).await;
    assert_eq!(
        next_clr(&every).await,
        (ClrReason::Invalidation, posted.clone())
    );
    assert_eq!(
        next_clr(&no_purge).await,
        (ClrReason::Invalidation, posted),
        "the first CLR it hears of, not the PURGE's"
    );
    assert_eq!(canopy.stats().await.htcp.clr_sent, 3);
}

/// Squid's `htcp=forward-clr`: a CLR from Squid, obeyed here, is passed on to the peers
/// marked so, never back to Squid, and not to the others.
#[tokio::test]
async fn a_clr_from_squid_is_forwarded_to_forward_clr_peers_only() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let (canopy, htcp_port) = start_canopy(&[("htcp_clr_access", "127.0.0.2")]).await;
    let (squid, squid_htcp) = start_squid(
        &binary,
        &format!(
            "cache_peer 127.0.0.1 sibling {} {htcp_port} htcp name=canopy\n",
            canopy.addr.port()
        ),
    );
    let onward = htcp_listener([127, 0, 0, 3]).await;
    let plain = htcp_listener([127, 0, 0, 4]).await;
    add_listening_peer(&canopy, "onward", &onward, &["--forward-clr"]);
    add_listening_peer(&canopy, "plain", &plain, &[]);
    let options = ["--htcp", "on", "--no-query", "--forward-clr"];
    add_squid_peer(&canopy, &squid, "squid", squid_htcp, &options);

    let url = origin.url("/cleared-everywhere");
    purged_at_squid(&canopy, &squid, &url).await;
    assert_eq!(
        next_clr(&onward).await,
        (ClrReason::Unspecified, url.clone())
    );
    assert_eq!(canopy.stats().await.htcp.clr_purged, 1);
    assert_eq!(canopy.stats().await.htcp.clr_forwarded, 1);

    // A PURGE here is told to every HTCP peer: the first CLR "plain" and Squid hear of.
    let own = origin.url("/purged-here");
    held_then(&canopy, "PURGE", &own).await;
    assert_eq!(
        next_clr(&plain).await,
        (ClrReason::Unspecified, own.clone())
    );
    squid.wait_logged("HTCP_CLR", &own).await;
    let log = squid.access_log();
    assert_eq!(
        log.lines().filter(|l| l.contains("HTCP_CLR")).count(),
        1,
        "Squid's own CLR was not sent back to it: {log}"
    );
}
