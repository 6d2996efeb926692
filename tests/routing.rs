//! Parent routing end to end: rules, selection, health, retries and loops, with Canopy
//! instances as the parents.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use hyper::{Response, StatusCode};

use common::*;

fn uncacheable(_: &Seen) -> Response<OriginBody> {
    Response::builder()
        .header("cache-control", "no-store")
        .body(full("ok"))
        .unwrap()
}

/// The parent that served, from `X-Canopy-Hop: parent=NAME rule=N reason=R`.
fn hop_parent(r: &Fetched) -> String {
    let hop = r.header("x-canopy-hop");
    hop.split_whitespace()
        .find_map(|part| part.strip_prefix("parent="))
        .unwrap_or_else(|| panic!("no parent in X-Canopy-Hop {hop:?}"))
        .to_owned()
}

async fn parents(n: usize) -> Vec<Canopy> {
    let mut started = Vec::new();
    for i in 0..n {
        started.push(Canopy::start(&[("visible_name", &format!("parent-{i}"))]).await);
    }
    started
}

fn list(parents: &[&Canopy]) -> String {
    parents
        .iter()
        .map(|p| format!("{};", p.addr))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn consistent_hashing_spreads_urls_and_moves_only_a_removed_parents_share() {
    let origin = Origin::start(uncacheable).await;
    let ps = parents(3).await;
    let all = list(&[&ps[0], &ps[1], &ps[2]]);
    let child = Canopy::start(&[
        ("parents", &all),
        ("round_robin", "consistent_hash"),
        ("debug_headers", "on"),
    ])
    .await;
    let mut home: HashMap<usize, String> = HashMap::new();
    for i in 0..3000 {
        let r = child.get(&origin.url(&format!("/object/{i}"))).await;
        assert_eq!(r.status, StatusCode::OK);
        home.insert(i, hop_parent(&r));
    }
    for p in &ps {
        let share = home.values().filter(|h| **h == p.addr.to_string()).count();
        assert!(
            (850..=1150).contains(&share),
            "{} got {share} of 3000",
            p.addr
        );
    }
    child.reconfigure(&[("parents", &list(&[&ps[0], &ps[1]]))]);
    let removed = ps[2].addr.to_string();
    let mut moved = 0;
    for i in 0..3000 {
        let r = child.get(&origin.url(&format!("/object/{i}"))).await;
        if hop_parent(&r) != home[&i] {
            moved += 1;
        }
    }
    let removed_share = home.values().filter(|h| **h == removed).count();
    assert!(
        moved <= removed_share + 150,
        "{moved} URLs moved; the removed parent had {removed_share}"
    );
}

#[tokio::test]
async fn strict_round_robin_is_even_and_weights_are_honoured() {
    let origin = Origin::start(uncacheable).await;
    let ps = parents(3).await;
    let child = Canopy::start(&[
        ("parents", &list(&[&ps[0], &ps[1], &ps[2]])),
        ("round_robin", "strict"),
    ])
    .await;
    for i in 0..300 {
        assert_eq!(
            child.get(&origin.url(&format!("/rr/{i}"))).await.status,
            StatusCode::OK
        );
    }
    for p in &ps {
        let served = p.stats().await.requests;
        assert!(
            (98..=102).contains(&served),
            "{} served {served} of 300",
            p.addr
        );
    }
    let weighted = format!("{}|1; {}|3;", ps[0].addr, ps[1].addr);
    child.reconfigure(&[("parents", &weighted)]);
    let before = [ps[0].stats().await.requests, ps[1].stats().await.requests];
    for i in 0..400 {
        child.get(&origin.url(&format!("/w/{i}"))).await;
    }
    let light = ps[0].stats().await.requests - before[0];
    let heavy = ps[1].stats().await.requests - before[1];
    assert!(
        (90..=110).contains(&light) && (290..=310).contains(&heavy),
        "{light}:{heavy}"
    );
}

#[tokio::test]
async fn a_stopped_parent_is_marked_down_and_used_again_after_retry_time() {
    let origin = Origin::start(uncacheable).await;
    let mut ps = parents(2).await;
    let child = Canopy::start(&[
        ("parents", &list(&[&ps[0], &ps[1]])),
        ("fail_threshold", "3"),
        ("retry_time_s", "2"),
    ])
    .await;
    let first = ps[0].addr.to_string();
    for i in 0..60 {
        if i == 20 {
            ps[0].kill();
        }
        let r = child.get(&origin.url(&format!("/s/{i}"))).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.text());
    }
    let stats = child.stats().await;
    let down = stats.peers.iter().find(|p| p.name == first).unwrap();
    assert!(down.health.down, "{down:?}");
    assert_eq!(
        down.failures, 3,
        "requests do not wait on a parent known to be down"
    );
    assert_eq!(ps[1].stats().await.requests, 40);

    ps[0].restart().await;
    let mut i = 0;
    wait_for(
        "the restarted parent to be used again",
        Duration::from_secs(20),
        || {
            i += 1;
            let url = origin.url(&format!("/back/{i}"));
            let (child, ps0) = (&child, &ps[0]);
            async move {
                assert_eq!(child.get(&url).await.status, StatusCode::OK);
                ps0.stats().await.requests > 0
            }
        },
    )
    .await;
    let stats = child.stats().await;
    assert!(
        !stats
            .peers
            .iter()
            .find(|p| p.name == first)
            .unwrap()
            .health
            .down
    );
}

#[tokio::test]
async fn a_per_domain_rule_picks_the_parent_and_go_direct_false_gives_504() {
    let origin = Origin::start(|seen| {
        Response::builder()
            .header("cache-control", "no-store")
            .body(full(format!("origin saw {}", seen.path)))
            .unwrap()
    })
    .await;
    let parent_a = Canopy::start(&[("visible_name", "parent-a")]).await;
    // B knows a.test only as a name: it sends everything to the origin as its own parent.
    let mut parent_b = Canopy::start(&[
        ("visible_name", "parent-b"),
        ("parents", &format!("{};", origin.addr)),
        ("never_direct", "on"),
    ])
    .await;
    let child = Canopy::start(&[
        ("parents", &format!("{};", parent_a.addr)),
        ("debug_headers", "on"),
    ])
    .await;
    let add = child.cli(&[
        "rule",
        "add",
        "--dest-domain",
        "a.test",
        "--parents",
        &format!("{};", parent_b.addr),
        "--go-direct",
        "false",
    ]);
    assert!(add.status.success(), "{}", stderr(&add));
    assert!(child.cli(&["reload"]).status.success());

    let via_b = child.get("http://www.a.test/x").await;
    assert_eq!(via_b.text(), "origin saw /x");
    assert_eq!(
        via_b.header("x-canopy-hop"),
        format!("parent={} rule=1 reason=in_order", parent_b.addr)
    );
    let via_a = child.get(&origin.url("/y")).await;
    assert_eq!(
        via_a.header("x-canopy-hop"),
        format!("parent={} rule=0 reason=in_order", parent_a.addr)
    );
    assert_eq!(parent_b.stats().await.requests, 1);
    assert_eq!(parent_a.stats().await.requests, 1);

    parent_b.kill();
    let r = child.get("http://a.test/z").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        r.text().contains(&parent_b.addr.to_string()),
        "{}",
        r.text()
    );
    assert!(r.text().contains("rule 1"), "{}", r.text());
    assert_eq!(origin.count("/z"), 0);
}

#[tokio::test]
async fn two_proxies_that_are_each_others_parent_do_not_loop() {
    let origin = Origin::start(|_| {
        Response::builder()
            .header("cache-control", "max-age=60")
            .body(full("round trip"))
            .unwrap()
    })
    .await;
    let (port_p, port_q) = (free_port(), free_port());
    let p = Canopy::start(&[
        ("visible_name", "proxy-p"),
        ("http_port", &port_p.to_string()),
        ("parents", &format!("127.0.0.1:{port_q};")),
    ])
    .await;
    let q = Canopy::start(&[
        ("visible_name", "proxy-q"),
        ("http_port", &port_q.to_string()),
        ("parents", &format!("127.0.0.1:{port_p};")),
    ])
    .await;
    let r = p.get(&origin.url("/round")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(origin.count("/round"), 1);
    // p asked q, q asked p, and p, seeing itself in Via, went to the origin: the request
    // that came back must not wait on the collapsed fetch it is itself part of.
    assert_eq!(q.stats().await.requests, 1);
    assert_eq!(p.stats().await.requests, 2);
    let again = p.get(&origin.url("/round")).await;
    assert_eq!(again.header("x-cache"), "HIT from proxy-p");
    assert_eq!(origin.count("/round"), 1);
}

#[tokio::test]
async fn a_parent_that_is_this_proxy_is_refused() {
    let proxy = Canopy::start(&[]).await;
    let own = proxy.addr.to_string();
    let set = proxy.cli(&["config", "set", "parents", &format!("{own};")]);
    assert_eq!(set.status.code(), Some(2));
    assert!(
        stderr(&set).contains(&format!("{own} is this proxy's own listener")),
        "{}",
        stderr(&set)
    );
    let elsewhere = format!("127.0.0.1:{}", proxy.addr.port() + 1);
    let other = proxy.cli(&["config", "set", "parents", &format!("{elsewhere};")]);
    assert!(
        other.status.success(),
        "another port of the same host is another proxy"
    );
}

/// A name that does not resolve is saved (it may resolve later), with a warning.
#[tokio::test]
async fn a_parent_name_that_does_not_resolve_is_saved_with_a_warning() {
    let proxy = Canopy::start(&[]).await;
    let set = proxy.cli(&["config", "set", "parents", "nowhere.invalid:3128;"]);
    assert!(set.status.success(), "{}", stderr(&set));
    assert!(
        stderr(&set).contains("warning: nowhere.invalid does not resolve"),
        "{}",
        stderr(&set)
    );
    let again = proxy.cli(&["config", "set", "visible_name", "renamed"]);
    assert!(!stderr(&again).contains("nowhere.invalid"), "warned once");
}

#[tokio::test]
async fn a_parent_taken_down_by_hand_is_skipped_until_brought_up() {
    let origin = Origin::start(uncacheable).await;
    let ps = parents(2).await;
    let child = Canopy::start(&[("parents", &list(&[&ps[0], &ps[1]]))]).await;
    let name = ps[0].addr.to_string();
    let down = child.cli(&["parent", "down", &name, "--reason", "disk swap"]);
    assert!(
        stdout(&down).contains("is down: disk swap"),
        "{}",
        stderr(&down)
    );
    child.get(&origin.url("/1")).await;
    assert_eq!(
        (ps[0].stats().await.requests, ps[1].stats().await.requests),
        (0, 1)
    );
    let up = child.cli(&["parent", "up", &name]);
    assert!(stdout(&up).contains("is up"));
    child.get(&origin.url("/2")).await;
    assert_eq!(ps[0].stats().await.requests, 1);
    let unknown = child.cli(&["parent", "down", "nowhere:1"]);
    assert!(
        stderr(&unknown).contains("no parent named"),
        "{}",
        stderr(&unknown)
    );
}

#[tokio::test]
async fn a_parent_answering_503_sends_the_request_on_to_the_next() {
    let origin = Origin::start(uncacheable).await;
    let busy = Origin::start(|_| {
        Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(full("busy"))
            .unwrap()
    })
    .await;
    let good = Canopy::start(&[("visible_name", "good-parent")]).await;
    let child = Canopy::start(&[("parents", &format!("{}; {};", busy.addr, good.addr))]).await;
    let r = child.get(&origin.url("/retry")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(busy.seen().len(), 1);
    assert_eq!(child.stats().await.retries, 1);
}

#[tokio::test]
async fn a_traffic_server_parent_config_imports_with_the_same_routing() {
    let origin = Origin::start(uncacheable).await;
    let ps = parents(3).await;
    let child = Canopy::start(&[("debug_headers", "on")]).await;
    let file = child.data_dir().join("parent.config");
    std::fs::write(
        &file,
        format!(
            "# three rules, as Traffic Server reads them\n\
             dest_ip=127.0.0.1 port={port} url_regex=/images/ parent=\"{a}\" round_robin=false\n\
             dest_domain=. url_regex=\\.iso$ parent=\"{b}\" go_direct=false\n\
             dest_ip=127.0.0.0/8 parent=\"{c}; {a}\" round_robin=strict\n",
            port = origin.addr.port(),
            a = ps[0].addr,
            b = ps[1].addr,
            c = ps[2].addr,
        ),
    )
    .unwrap();
    let import = child.cli(&["rule", "import", file.to_str().unwrap()]);
    assert!(import.status.success(), "{}", stderr(&import));
    assert!(child.cli(&["reload"]).status.success());
    let listed = stdout(&child.cli(&["rule", "list"]));
    assert_eq!(listed.lines().count(), 4, "{listed}");
    let hop = |r: Fetched| r.header("x-canopy-hop").to_owned();
    assert_eq!(
        hop(child.get(&origin.url("/images/a.png")).await),
        format!("parent={} rule=1 reason=in_order", ps[0].addr)
    );
    assert_eq!(
        hop(child.get(&origin.url("/debian.iso")).await),
        format!("parent={} rule=2 reason=in_order", ps[1].addr)
    );
    let strict: Vec<String> = [
        hop(child.get(&origin.url("/x")).await),
        hop(child.get(&origin.url("/y")).await),
    ]
    .to_vec();
    assert!(
        strict.contains(&format!("parent={} rule=3 reason=strict", ps[2].addr)),
        "{strict:?}"
    );
    assert!(
        strict.contains(&format!("parent={} rule=3 reason=strict", ps[0].addr)),
        "{strict:?}"
    );

    std::fs::write(&file, "dest_domain=a.test parent=\"p:1\" port=http\n").unwrap();
    let bad = child.cli(&["rule", "import", file.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("line 1: port=http: expected a port number"),
        "{}",
        stderr(&bad)
    );
    assert_eq!(stdout(&child.cli(&["rule", "list"])).lines().count(), 4);

    std::fs::write(
        &file,
        "dest_domain=a.test parent=\"p:1\" qstring=ignore\n\
         src_ip=10.0.0.1 parent=\"p:1\"\n",
    )
    .unwrap();
    let taken = child.cli(&["rule", "import", file.to_str().unwrap()]);
    assert_eq!(taken.status.code(), Some(0), "{}", stderr(&taken));
    let said = stdout(&taken);
    assert!(said.contains(":1: qstring=ignore ignored"), "{said}");
    assert!(said.contains(":2: rule not imported: src_ip="), "{said}");
    assert!(
        said.contains("1 rules read, 2 lines or options ignored"),
        "{said}"
    );
    let rules = stdout(&child.cli(&["rule", "list"]));
    assert!(rules.contains("dest_domain=a.test"), "{rules}");
    assert!(!rules.contains("src_ip"), "{rules}");
}

#[tokio::test]
async fn always_direct_skips_the_parents() {
    let origin = Origin::start(uncacheable).await;
    let ps = parents(1).await;
    let child = Canopy::start(&[
        ("parents", &list(&[&ps[0]])),
        ("always_direct", "on"),
        ("debug_headers", "on"),
    ])
    .await;
    let r = child.get(&origin.url("/direct")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("x-canopy-hop"),
        "direct rule=0 reason=always_direct"
    );
    assert_eq!(ps[0].stats().await.requests, 0);
    let both = child.cli(&["config", "set", "never_direct", "on"]);
    assert_eq!(both.status.code(), Some(2));
    assert!(
        stderr(&both).contains("cannot be on together with never_direct"),
        "{}",
        stderr(&both)
    );
}

/// The ICP peer that served, from `X-Canopy-Hop: peer=NAME hierarchy=CODE`.
fn hop_peer(r: &Fetched) -> String {
    let hop = r.header("x-canopy-hop");
    let field = |key: &str| {
        hop.split_whitespace()
            .find_map(|part| part.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in X-Canopy-Hop {hop:?}"))
            .to_owned()
    };
    format!("{} {}", field("peer="), field("hierarchy="))
}

#[tokio::test]
async fn round_robin_parents_take_turns_and_the_default_parent_is_the_last_resort() {
    let origin = Origin::start(uncacheable).await;
    let mut ps = parents(3).await;
    let child = Canopy::start(&[
        ("icp_mode", "send-receive"),
        ("icp_port", &free_udp_port().to_string()),
        ("icp_query_timeout_ms", "200"),
        ("debug_headers", "on"),
    ])
    .await;
    // Nothing answers ICP at this port: the default parent is asked and stays silent.
    let silent = free_udp_port().to_string();
    let add = |name: &str, parent: &Canopy, options: &[&str]| {
        let port = parent.addr.port().to_string();
        let mut args = vec![
            "peer",
            "add",
            name,
            "127.0.0.1",
            "--type",
            "parent",
            "--http-port",
            &port,
            "--icp-port",
            &silent,
        ];
        args.extend_from_slice(options);
        let out = child.cli(&args);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    add("rr-a", &ps[0], &["--no-query", "--round-robin"]);
    add("rr-b", &ps[1], &["--no-query", "--round-robin"]);
    add("fallback", &ps[2], &["--default"]);
    let reloaded = child.cli(&["reload"]);
    assert!(reloaded.status.success(), "{}", stderr(&reloaded));

    let mut served = Vec::new();
    for i in 0..4 {
        let r = child.get(&origin.url(&format!("/turn/{i}"))).await;
        assert_eq!(r.status, StatusCode::OK);
        served.push(hop_peer(&r));
    }
    let turns = ["rr-a ROUNDROBIN_PARENT", "rr-b ROUNDROBIN_PARENT"];
    assert_eq!(served, [turns[0], turns[1], turns[0], turns[1]]);

    // With both parents in the rotation gone, the default parent takes the miss.
    let _fallback = ps.split_off(2);
    drop(ps);
    let r = child.get(&origin.url("/last-resort")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(hop_peer(&r), "fallback DEFAULT_PARENT");
}

/// A client that puts this proxy's own name in Via (which any response shows it) must not
/// get round a rule's mandatory parent: the forwarding loop goes direct only where going
/// direct is allowed, as Squid's never_direct holds on a loop.
#[tokio::test]
async fn a_forged_via_does_not_get_a_client_round_a_mandatory_parent() {
    let origin = Origin::start(|seen| {
        Response::builder()
            .header("cache-control", "no-store")
            .body(full(format!("origin saw {}", seen.path)))
            .unwrap()
    })
    .await;
    let filter = Origin::start(|_| {
        Response::builder()
            .header("cache-control", "no-store")
            .body(full("the filtering parent answered"))
            .unwrap()
    })
    .await;
    let child = Canopy::start(&[("visible_name", "child-cache")]).await;
    let add = child.cli(&[
        "rule",
        "add",
        "--dest-domain",
        ".",
        "--parents",
        &format!("{};", filter.addr),
        "--go-direct",
        "false",
    ]);
    assert!(add.status.success(), "{}", stderr(&add));
    assert!(child.cli(&["reload"]).status.success());

    let through = child.get(&origin.url("/plain")).await;
    assert_eq!(through.text(), "the filtering parent answered");
    let forged = child
        .request("GET", &origin.url("/forged"), &[("via", "1.1 child-cache")])
        .await;
    assert_eq!(
        forged.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        forged.text()
    );
    assert!(
        forged.text().contains("forwarding loop") && forged.text().contains("rule 1"),
        "{}",
        forged.text()
    );
    assert_eq!(
        origin.count("/forged"),
        0,
        "the client got round the parent"
    );
    assert_eq!(origin.count("/plain"), 0);
}
