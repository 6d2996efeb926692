//! HTTP caching by the book, end to end: a scripted origin that can close the connection on
//! revalidation, send several variants and send interim responses, and the proxy between it
//! and a client. Where a stored object can be served from memory or from disk, each test runs
//! against both: a body past `max_object_size_in_memory` is kept on disk only.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::*;

/// Where a stored object is served from: its body's size decides.
#[derive(Debug, Clone, Copy)]
enum Tier {
    Memory,
    Disk,
}

impl Tier {
    fn body(self) -> String {
        let len = match self {
            Tier::Memory => 1024,
            Tier::Disk => 600 * 1024,
        };
        "x".repeat(len)
    }
}

/// A request head as the origin read it.
#[derive(Debug, Clone)]
struct Asked {
    head: String,
}

impl Asked {
    fn field(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// What the origin does with the n-th request (from 0): the bytes it answers with, or
/// `None` to close the connection unanswered.
type Script = dyn Fn(usize, &Asked) -> Option<String> + Send + Sync;

/// An origin on loopback that reads request heads and answers each as its script says.
struct Scripted {
    addr: std::net::SocketAddr,
    asked: Arc<Mutex<Vec<Asked>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Scripted {
    async fn start(
        script: impl Fn(usize, &Asked) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let asked: Arc<Mutex<Vec<Asked>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let count = Arc::new(AtomicUsize::new(0));
        let recorded = asked.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (script, recorded, count) = (script.clone(), recorded.clone(), count.clone());
                tokio::spawn(serve(stream, script, recorded, count));
            }
        });
        Scripted {
            addr,
            asked,
            accepting,
        }
    }

    /// Stops listening: new connections are refused.
    async fn stop(self) {
        self.accepting.abort();
        let _ = self.accepting.await;
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    script: Arc<Script>,
    recorded: Arc<Mutex<Vec<Asked>>>,
    count: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let asked = Asked {
            head: String::from_utf8_lossy(&buf[..end]).into_owned(),
        };
        buf.drain(..end);
        recorded.lock().unwrap().push(asked.clone());
        let Some(answer) = script(count.fetch_add(1, Ordering::SeqCst), &asked) else {
            return;
        };
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A response's bytes: status, fields and body (none for 304).
fn answer(status: u16, fields: &[(&str, &str)], body: &str) -> String {
    let mut text = format!("HTTP/1.1 {status} Scripted\r\n");
    for (name, value) in fields {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = if status == 304 { "" } else { body };
    text.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    text
}

fn is_hit(fetched: &Fetched) -> bool {
    fetched.header("x-cache").starts_with("HIT")
}

/// Fetches `url` until a hit shows it stored (in memory, or on disk once written).
async fn stored(proxy: &Canopy, url: &str) {
    wait_for("the object stored", Duration::from_secs(10), || async {
        is_hit(&proxy.get(url).await)
    })
    .await;
}

#[tokio::test]
async fn a_stale_response_that_forbids_stale_use_gets_504_when_revalidation_fails() {
    for tier in [Tier::Memory, Tier::Disk] {
        for cc in [
            "max-age=60, must-revalidate, stale-if-error=600",
            "max-age=60, proxy-revalidate, stale-if-error=600",
            "s-maxage=60, stale-if-error=600",
            "max-age=600, no-cache, stale-if-error=600",
        ] {
            let body = tier.body();
            let origin = Scripted::start(move |n, _| {
                // Already 100 s old when it arrives: stale at once, except under no-cache.
                (n == 0).then(|| {
                    answer(
                        200,
                        &[("cache-control", cc), ("age", "100"), ("etag", "\"v1\"")],
                        &body,
                    )
                })
            })
            .await;
            let proxy = Canopy::start(&[]).await;
            let url = origin.url("/doc");
            assert_eq!(proxy.get(&url).await.status, 200, "{tier:?} {cc}");
            written_to_disk(&proxy, 1).await;
            for asked in [
                &[][..],
                &[("cache-control", "max-stale=600, stale-if-error=600")],
            ] {
                let fetched = proxy.request("GET", &url, asked).await;
                assert_eq!(
                    fetched.status,
                    504,
                    "{tier:?} {cc} {asked:?}: {}",
                    fetched.text()
                );
            }
            let revalidations = origin.asked().len() - 1;
            assert!(
                revalidations >= 2,
                "{tier:?} {cc}: revalidated each time, unasked"
            );
            assert!(
                origin.asked()[1].field("if-none-match").is_some(),
                "{tier:?} {cc}"
            );
        }
    }
}

#[tokio::test]
async fn an_unreachable_origin_gives_504_for_a_stale_must_revalidate_response() {
    let origin = Scripted::start(|n, _| {
        let fields = [
            ("cache-control", "max-age=60, must-revalidate"),
            ("age", "100"),
        ];
        (n == 0).then(|| answer(200, &fields, "body"))
    })
    .await;
    let url = origin.url("/gone");
    let proxy = Canopy::start(&[]).await;
    assert_eq!(proxy.get(&url).await.status, 200);
    origin.stop().await;
    let fetched = proxy.get(&url).await;
    assert_eq!(fetched.status, 504, "{}", fetched.text());
}

/// An origin of two variants by Accept-Language, `en` (ETag "a") and `de` (ETag "b"), that
/// answers any other language with a 304 naming "b".
async fn variants_origin() -> Scripted {
    Scripted::start(|_, asked| {
        let language = asked.field("accept-language").unwrap_or_default();
        let fields = |etag| {
            [
                ("cache-control", "max-age=600"),
                ("vary", "accept-language"),
                ("etag", etag),
            ]
        };
        Some(match language.as_str() {
            "en" => answer(200, &fields("\"a\""), "english"),
            "de" => answer(200, &fields("\"b\""), "deutsch"),
            _ => answer(
                304,
                &[
                    ("etag", "\"b\""),
                    ("cache-control", "max-age=900"),
                    ("x-refreshed", "yes"),
                ],
                "",
            ),
        })
    })
    .await
}

/// Waits until the disk tier has written `objects` objects.
async fn written_to_disk(proxy: &Canopy, objects: u64) {
    wait_for("the objects on disk", Duration::from_secs(10), || async {
        proxy
            .stats()
            .await
            .disk
            .is_some_and(|disk| disk.writes >= objects)
    })
    .await;
}

#[tokio::test]
async fn a_304_to_the_etags_of_every_variant_serves_the_one_it_names() {
    let origin = variants_origin().await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/page");
    for language in ["en", "de"] {
        let fetched = proxy
            .request("GET", &url, &[("accept-language", language)])
            .await;
        assert_eq!(fetched.status, 200);
        wait_for("the variant stored", Duration::from_secs(10), || async {
            is_hit(
                &proxy
                    .request("GET", &url, &[("accept-language", language)])
                    .await,
            )
        })
        .await;
    }
    let swiss = proxy
        .request("GET", &url, &[("accept-language", "de-CH")])
        .await;
    assert_eq!(
        (swiss.status.as_u16(), swiss.text().as_str()),
        (200, "deutsch"),
        "{:?}",
        origin.asked()
    );
    assert_eq!(
        swiss.header("x-refreshed"),
        "yes",
        "the 304's fields are merged"
    );
    assert_eq!(swiss.header("cache-control"), "max-age=900");
    let condition = origin.asked()[2]
        .field("if-none-match")
        .expect("conditional");
    assert!(
        condition.contains("\"a\"") && condition.contains("\"b\""),
        "{condition}"
    );
    let again = proxy
        .request("GET", &url, &[("accept-language", "de-CH")])
        .await;
    assert!(is_hit(&again), "stored for requests like it");
    assert_eq!(again.text(), "deutsch");
    let german = proxy
        .request("GET", &url, &[("accept-language", "de")])
        .await;
    assert!(is_hit(&german));
    assert_eq!(
        german.header("x-refreshed"),
        "yes",
        "the named variant refreshed"
    );
    assert_eq!(origin.asked().len(), 3);
}

#[tokio::test]
async fn cdn_cache_control_governs_only_when_listed_and_valid() {
    let origin = Scripted::start(|_, asked| {
        let target = asked.head.lines().next().unwrap_or_default().to_owned();
        let cdn = if target.contains("/invalid") {
            "max-age=600,"
        } else {
            "max-age=600"
        };
        Some(answer(
            200,
            &[("cache-control", "no-store"), ("cdn-cache-control", cdn)],
            "body",
        ))
    })
    .await;
    let plain = Canopy::start(&[]).await;
    let listed = Canopy::start(&[("targeted_cache_control", "CDN-Cache-Control")]).await;
    for proxy in [&plain, &listed] {
        proxy.get(&origin.url("/valid")).await;
        proxy.get(&origin.url("/invalid")).await;
    }
    assert!(is_hit(&listed.get(&origin.url("/valid")).await));
    assert!(
        !is_hit(&listed.get(&origin.url("/invalid")).await),
        "ignored as a whole"
    );
    assert!(
        !is_hit(&plain.get(&origin.url("/valid")).await),
        "not on the list"
    );
}

#[tokio::test]
async fn no_cache_and_last_modified_responses_are_revalidated_not_refetched() {
    for tier in [Tier::Memory, Tier::Disk] {
        let body = tier.body();
        let modified = "Tue, 14 Nov 2023 22:13:20 GMT";
        let origin = Scripted::start(move |_, asked| {
            let target = asked.head.lines().next().unwrap_or_default().to_owned();
            let conditional = asked.field("if-none-match").is_some()
                || asked.field("if-modified-since").is_some();
            let fields: &[(&str, &str)] = if target.contains("/no-cache") {
                &[("cache-control", "no-cache"), ("etag", "\"v1\"")]
            } else {
                &[
                    ("cache-control", "max-age=600"),
                    ("last-modified", modified),
                ]
            };
            Some(answer(if conditional { 304 } else { 200 }, fields, &body))
        })
        .await;
        let proxy = Canopy::start(&[]).await;
        let no_cache = origin.url("/no-cache");
        let dated = origin.url("/dated");
        proxy.get(&no_cache).await;
        proxy.get(&dated).await;
        stored(&proxy, &dated).await;
        wait_for("both written", Duration::from_secs(10), || async {
            proxy
                .stats()
                .await
                .disk
                .is_some_and(|disk| disk.writes >= 2)
        })
        .await;
        let revalidated = proxy.get(&no_cache).await;
        assert_eq!(revalidated.status, 200);
        assert_eq!(revalidated.body.len(), tier.body().len(), "{tier:?}");
        let last = origin.asked().last().cloned().expect("asked");
        assert_eq!(
            last.field("if-none-match").as_deref(),
            Some("\"v1\""),
            "{tier:?}"
        );
        let asked = proxy
            .request("GET", &dated, &[("cache-control", "no-cache")])
            .await;
        assert_eq!(asked.status, 200);
        assert_eq!(asked.body.len(), tier.body().len(), "{tier:?}");
        let last = origin.asked().last().cloned().expect("asked");
        assert_eq!(
            last.field("if-modified-since").as_deref(),
            Some(modified),
            "{tier:?}"
        );
    }
}

#[tokio::test]
async fn an_authenticated_request_stores_and_reuses_what_is_said_to_be_shared() {
    let origin = Scripted::start(|_, asked| {
        let target = asked.head.lines().next().unwrap_or_default().to_owned();
        let cc = if target.contains("/public") {
            "public, max-age=600"
        } else {
            "max-age=600"
        };
        Some(answer(200, &[("cache-control", cc)], "for you"))
    })
    .await;
    let proxy = Canopy::start(&[]).await;
    let auth = [("authorization", "Basic dTpw")];
    for path in ["/public", "/own"] {
        proxy.request("GET", &origin.url(path), &auth).await;
    }
    assert!(is_hit(
        &proxy.request("GET", &origin.url("/public"), &auth).await
    ));
    assert!(!is_hit(
        &proxy.request("GET", &origin.url("/own"), &auth).await
    ));
    assert!(!is_hit(&proxy.get(&origin.url("/own")).await));
}

#[tokio::test]
async fn equivalent_accept_language_values_share_a_variant() {
    let origin = Scripted::start(|_, _| {
        Some(answer(
            200,
            &[
                ("cache-control", "max-age=600"),
                ("vary", "accept-language"),
            ],
            "hallo",
        ))
    })
    .await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/greeting");
    proxy
        .request("GET", &url, &[("accept-language", "en, de")])
        .await;
    for same in ["de, en", "eN, De", " en ,   de"] {
        let fetched = proxy
            .request("GET", &url, &[("accept-language", same)])
            .await;
        assert!(is_hit(&fetched), "{same:?}");
    }
}

#[tokio::test]
async fn interim_responses_are_never_stored_nor_merged() {
    let origin = Scripted::start(|_, _| {
        Some(format!(
            "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
             HTTP/1.1 102 Processing\r\nx-interim: 1\r\n\r\n{}",
            answer(200, &[("cache-control", "max-age=600")], "final")
        ))
    })
    .await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/hinted");
    let first = proxy.get(&url).await;
    assert_eq!(
        (first.status.as_u16(), first.text().as_str()),
        (200, "final")
    );
    let hit = proxy.get(&url).await;
    assert!(is_hit(&hit));
    assert_eq!(hit.text(), "final");
    assert_eq!(hit.header("link"), "");
    assert_eq!(hit.header("x-interim"), "");
}

#[tokio::test]
async fn a_post_response_naming_its_own_uri_answers_later_gets() {
    for tier in [Tier::Memory, Tier::Disk] {
        let body = tier.body();
        let origin = Origin::start(move |seen| {
            let posted = seen.method == "POST";
            let (location, cache_control) = match seen.path.as_str() {
                "/order" => ("/order", "max-age=600"),
                "/heuristic" => ("/heuristic", "public"),
                "/private" => ("/private", "max-age=600, private"),
                _ => ("/receipt", "max-age=600"),
            };
            let text = if posted {
                body.clone()
            } else {
                "got".to_owned()
            };
            Response::builder()
                .header("cache-control", cache_control)
                .header("content-location", location)
                .header("x-method", seen.method.as_str())
                .body(full(text))
                .unwrap()
        })
        .await;
        let proxy = Canopy::start(&[]).await;
        let cached_only = [("cache-control", "only-if-cached")];
        for path in ["/order", "/heuristic", "/private", "/other"] {
            let url = origin.url(path);
            let posted = proxy.request("POST", &url, &[]).await;
            assert_eq!(posted.status, 200, "{tier:?} {path}");
            assert_eq!(posted.header("x-method"), "POST");
        }
        let order = origin.url("/order");
        wait_for(
            "the POST response stored",
            Duration::from_secs(10),
            || async { proxy.request("GET", &order, &cached_only).await.status == 200 },
        )
        .await;
        let got = proxy.get(&order).await;
        assert!(is_hit(&got), "{tier:?}");
        assert_eq!(got.header("x-method"), "POST", "{tier:?}");
        assert_eq!(got.body.len(), tier.body().len(), "{tier:?}");
        let head = proxy.request("HEAD", &order, &[]).await;
        assert!(is_hit(&head), "{tier:?}: HEAD from the stored GET");
        for path in ["/heuristic", "/private", "/other"] {
            let fetched = proxy.request("GET", &origin.url(path), &cached_only).await;
            assert_eq!(fetched.status, 504, "{tier:?} {path}: not stored");
        }
        // The POST itself always goes to the origin, and invalidates what it replaces.
        let again = proxy.request("POST", &order, &[]).await;
        assert_eq!(again.header("x-method"), "POST");
        let posts = origin.seen().iter().filter(|s| s.method == "POST").count();
        let gets = origin.seen().iter().filter(|s| s.method != "POST").count();
        assert_eq!((posts, gets), (5, 0), "{tier:?}");
    }
}

#[tokio::test]
async fn variants_held_only_on_disk_are_validated_with_their_etags_too() {
    let origin = variants_origin().await;
    let mut proxy = Canopy::start(&[]).await;
    let url = origin.url("/page");
    for language in ["en", "de"] {
        let fetched = proxy
            .request("GET", &url, &[("accept-language", language)])
            .await;
        assert_eq!(fetched.status, 200);
    }
    written_to_disk(&proxy, 2).await;
    // Memory is empty after a restart: the variants are on disk only.
    proxy.kill();
    proxy.restart().await;
    let swiss = proxy
        .request("GET", &url, &[("accept-language", "de-CH")])
        .await;
    let asked = origin.asked();
    assert_eq!(
        (swiss.status.as_u16(), swiss.text().as_str()),
        (200, "deutsch"),
        "{asked:?}"
    );
    let condition = asked[2].field("if-none-match").expect("conditional");
    assert!(
        condition.contains("\"a\"") && condition.contains("\"b\""),
        "{condition}"
    );
    assert_eq!(
        swiss.header("x-refreshed"),
        "yes",
        "the 304's fields merged"
    );
    assert_eq!(swiss.header("cache-control"), "max-age=900");
    wait_for(
        "the disk variant refreshed",
        Duration::from_secs(10),
        || async {
            let german = proxy
                .request("GET", &url, &[("accept-language", "de")])
                .await;
            is_hit(&german) && german.header("x-refreshed") == "yes"
        },
    )
    .await;
    assert_eq!(origin.asked().len(), 3);
}

#[tokio::test]
async fn a_206_with_the_validator_of_a_stored_response_updates_its_fields() {
    for tier in [Tier::Memory, Tier::Disk] {
        let body = tier.body();
        let length = body.len();
        let origin = Scripted::start(move |_, asked| {
            let fields = |version| {
                [
                    ("vary", "accept-language"),
                    ("etag", "\"v1\""),
                    ("x-version", version),
                ]
            };
            Some(match asked.field("range") {
                None => {
                    let mut whole = fields("1").to_vec();
                    whole.push(("cache-control", "max-age=600"));
                    answer(200, &whole, &body)
                }
                Some(_) => {
                    let range = format!("bytes {}-{}/{length}", length - 5, length - 1);
                    let mut part = fields("2").to_vec();
                    part.extend([
                        ("cache-control", "max-age=900"),
                        ("content-range", range.as_str()),
                    ]);
                    answer(206, &part, "xxxxx")
                }
            })
        })
        .await;
        let proxy = Canopy::start(&[]).await;
        let url = origin.url("/video");
        let english = [("accept-language", "en")];
        assert_eq!(proxy.request("GET", &url, &english).await.status, 200);
        let cached_english = [
            ("accept-language", "en"),
            ("cache-control", "only-if-cached"),
        ];
        wait_for("the response stored", Duration::from_secs(10), || async {
            proxy.request("GET", &url, &cached_english).await.status == 200
        })
        .await;
        // Another variant's range goes upstream as asked; its 206 has the stored validator.
        let french = proxy
            .request(
                "GET",
                &url,
                &[("accept-language", "fr"), ("range", "bytes=-5")],
            )
            .await;
        assert_eq!(
            (french.status.as_u16(), french.text().as_str()),
            (206, "xxxxx"),
            "{tier:?}"
        );
        wait_for(
            "the stored fields updated",
            Duration::from_secs(10),
            || async {
                let stored = proxy.request("GET", &url, &cached_english).await;
                stored.header("x-version") == "2"
            },
        )
        .await;
        let stored = proxy.request("GET", &url, &english).await;
        assert!(is_hit(&stored), "{tier:?}");
        assert_eq!(stored.header("cache-control"), "max-age=900", "{tier:?}");
        assert_eq!(stored.body.len(), length, "{tier:?}: the body kept");
        assert_eq!(origin.asked().len(), 2, "{tier:?}");
    }
}
