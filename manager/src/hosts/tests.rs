use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

fn names(text: &str) -> HostList {
    text.parse().unwrap()
}

fn request(method: Method, host: Option<&str>, origin: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri("/login");
    if let Some(host) = host {
        builder = builder.header(header::HOST, host);
    }
    if let Some(origin) = origin {
        builder = builder.header(header::ORIGIN, origin);
    }
    builder.body(Body::empty()).unwrap()
}

fn judged(
    method: Method,
    host: Option<&str>,
    origin: Option<&str>,
    listed: &str,
) -> Result<(), Misdirected> {
    let request = request(method, host, origin);
    judge(
        request.method(),
        request.uri(),
        request.headers(),
        &names(listed),
    )
}

#[test]
fn addresses_localhost_and_listed_names_are_answered_on_any_port() {
    for host in [
        "127.0.0.1:8080",
        "127.0.0.1",
        "10.1.2.3:9000",
        "[::1]:8080",
        "[::1]",
        "localhost:8080",
        "LocalHost:2222",
        "console.example.com:8080",
        "Console.Example.com",
    ] {
        assert_eq!(
            judged(Method::GET, Some(host), None, "console.example.com"),
            Ok(()),
            "{host}"
        );
    }
    assert_eq!(
        judged(Method::GET, None, None, ""),
        Ok(()),
        "no Host: not a browser"
    );
}

#[test]
fn any_other_name_is_misdirected() {
    for host in [
        "attacker.example:8080",
        "attacker.example",
        "console.example.com.attacker.example",
        "localhost.attacker.example:8080",
        "2130706433:8080",
        "127.0.0.1:notaport",
        "[::1:8080",
        "[::1]x",
        "",
    ] {
        assert_eq!(
            judged(Method::GET, Some(host), None, "console.example.com"),
            Err(Misdirected::Host {
                host: host.to_owned()
            }),
            "{host}"
        );
    }
}

#[test]
fn a_change_must_come_from_the_console_s_own_page() {
    let ok = |origin: &str, host: &str| {
        judged(
            Method::POST,
            Some(host),
            Some(origin),
            "console.example.com",
        )
    };
    assert_eq!(ok("http://127.0.0.1:8080", "127.0.0.1:8080"), Ok(()));
    assert_eq!(
        ok("https://console.example.com", "127.0.0.1:8080"),
        Ok(()),
        "behind a TLS proxy"
    );
    for (origin, host) in [
        ("http://attacker.example", "127.0.0.1:8080"),
        ("http://127.0.0.1:3000", "127.0.0.1:8080"),
        ("null", "127.0.0.1:8080"),
        ("http://localhost:8080", "127.0.0.1:8080"),
    ] {
        assert_eq!(
            ok(origin, host),
            Err(Misdirected::Origin {
                origin: origin.to_owned()
            }),
            "{origin} posting to {host}"
        );
    }
    assert_eq!(
        judged(
            Method::GET,
            Some("127.0.0.1:8080"),
            Some("http://attacker.example"),
            ""
        ),
        Ok(()),
        "reading is left to the Host check and the session"
    );
    assert_eq!(
        judged(Method::POST, Some("127.0.0.1:8080"), None, ""),
        Ok(())
    );
}

async fn console() -> (tempfile::TempDir, crate::state::AppState) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
    let state = crate::state::AppState::new(db, dir.path().join("canopy.sock"));
    (dir, state)
}

async fn answer(state: &crate::state::AppState, request: Request<Body>) -> (StatusCode, String) {
    let response = crate::router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_router_answers_421_to_a_rebound_name_until_it_is_listed() {
    let (_dir, state) = console().await;
    let rebound = || request(Method::GET, Some("console.example.com:8080"), None);
    let (status, body) = answer(&state, rebound()).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    assert!(body.contains("\"console.example.com:8080\""), "{body}");
    assert!(body.contains("manager_hosts"), "{body}");
    let (status, _) = answer(&state, request(Method::GET, Some("127.0.0.1:8080"), None)).await;
    assert_eq!(status, StatusCode::OK);

    let mut config = state.db.latest().await.unwrap().config;
    config.set("manager_hosts", "console.example.com").unwrap();
    state.db.save_change(&config, "test", None).await.unwrap();
    let (status, _) = answer(&state, rebound()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a saved version's names count at once"
    );

    let newest = state.db.latest().await.unwrap().id;
    config.set("manager_hosts", "").unwrap();
    let rejected = state.db.save_change(&config, "test", None).await.unwrap();
    assert!(rejected > newest);
    state
        .db
        .mark(
            rejected,
            canopy_config::versions::VersionState::Rejected,
            Some("test"),
        )
        .await
        .unwrap();
    let (status, _) = answer(&state, rebound()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a rejected version's names do not count"
    );
}

#[tokio::test]
async fn the_router_refuses_a_form_posted_from_another_site() {
    let (_dir, state) = console().await;
    let (status, body) = answer(
        &state,
        request(
            Method::POST,
            Some("127.0.0.1:8080"),
            Some("http://attacker.example"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("\"http://attacker.example\""), "{body}");
}
