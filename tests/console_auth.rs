//! The console under attack, end to end against the real `canopy-manager` process: floods
//! of wrong passwords (HTTP Basic on `/metrics`, the login form) keep its memory bounded and
//! lock the administrator out only briefly, and a page that reaches it through a rebinding
//! DNS name gets nothing.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::task::JoinSet;

use common::console::{set_cookie, Console};
use common::RssSampler;
use common::{canopy_cli, stderr, wait_for};

const PASSWORD: &str = "the administrator's password";
/// Clients guessing at once, and guesses each makes in turn.
const FLOOD: usize = 50;
const ROUNDS: usize = 3;
/// The console starts near 15 MiB and one password check needs argon2's 19 MiB; under these
/// floods it peaks near 75 MiB (it went past 5 GiB when every guess was checked at once).
const RSS_LIMIT_KIB: u64 = 128 * 1024;
/// The address that guesses the administrator's password.
const GUESSER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// The administrator's own address, which never guessed.
const ADMIN: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// How long the administrator may have to wait after a flood.
const LOCKED_OUT_AT_MOST: Duration = Duration::from_secs(60);

/// Each of many addresses guessing a name of its own, so that no limit per address or per
/// account stops them: 127.0.1.1, 127.0.1.2, ...
fn spread_address(client: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + client as u8))
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// One request of a flood.
struct Attempt {
    from: IpAddr,
    method: &'static str,
    path: &'static str,
    headers: Vec<(String, String)>,
    body: String,
}

/// How many answers of each status a flood got; 0 counts requests that got no answer.
type Statuses = BTreeMap<u16, usize>;

/// [`FLOOD`] clients at once, each making [`ROUNDS`] attempts one after the other.
async fn flood(
    console: &Arc<Console>,
    attempt: impl Fn(usize, usize) -> Attempt + Send + Sync + 'static,
) -> Statuses {
    let attempt = Arc::new(attempt);
    let mut clients = JoinSet::new();
    for client in 0..FLOOD {
        let (console, attempt) = (console.clone(), attempt.clone());
        clients.spawn(async move {
            let mut statuses = Vec::new();
            for round in 0..ROUNDS {
                let a = attempt(client, round);
                let headers: Vec<(&str, &str)> = a
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let answer = console
                    .request(a.from, a.method, a.path, &headers, &a.body)
                    .await;
                statuses.push(answer.map(|f| f.status.as_u16()).unwrap_or(0));
            }
            statuses
        });
    }
    let mut counted = Statuses::new();
    while let Some(statuses) = clients.join_next().await {
        for status in statuses.expect("a flooding client") {
            *counted.entry(status).or_default() += 1;
        }
    }
    counted
}

/// Every answer a refused guess may get: 401 (checked, wrong), 429 (too many failures from
/// this address or for this account), 503 (the password checks are all busy).
fn assert_only_refusals(what: &str, statuses: &Statuses) {
    assert!(
        statuses.keys().all(|s| matches!(s, 401 | 429 | 503)),
        "{what}: {statuses:?}"
    );
}

fn assert_bounded(what: &str, rss: &RssSampler) {
    let peak = rss.peak_kib();
    assert!(
        peak < RSS_LIMIT_KIB,
        "{what}: canopy-manager reached {} MiB resident (limit {} MiB)",
        peak / 1024,
        RSS_LIMIT_KIB / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_basic_passwords_on_metrics_stays_in_bounded_memory() {
    let console = Arc::new(Console::start("admin", PASSWORD).await);
    let rss = RssSampler::start(console.pid());
    let scrape = |from: IpAddr, authorization: String| Attempt {
        from,
        method: "GET",
        path: "/metrics",
        headers: vec![("authorization".to_owned(), authorization)],
        body: String::new(),
    };
    let one_guesser = flood(&console, move |client, round| {
        scrape(GUESSER, basic("admin", &format!("guess {client}.{round}")))
    })
    .await;
    let many_guessers = flood(&console, move |client, _| {
        scrape(
            spread_address(client),
            basic(&format!("user{client}"), "guess"),
        )
    })
    .await;
    assert_bounded("after 300 wrong Basic passwords", &rss);
    assert_only_refusals("one address guessing admin", &one_guesser);
    assert_only_refusals("fifty addresses guessing", &many_guessers);
    assert!(
        one_guesser.get(&429).copied().unwrap_or_default() > FLOOD,
        "most guesses at one account are refused without a password check: {one_guesser:?}"
    );

    let right = basic("admin", PASSWORD);
    wait_for(
        "the right password to open /metrics",
        LOCKED_OUT_AT_MOST,
        || {
            let (console, right) = (console.clone(), right.clone());
            async move {
                let answer = console
                    .request(ADMIN, "GET", "/metrics", &[("authorization", &right)], "")
                    .await;
                matches!(answer, Ok(f) if f.status == 200 && f.text().contains("canopy_up"))
            }
        },
    )
    .await;
    assert_bounded("after the right password", &rss);
}

/// The login form's token and the cookie it must come back with.
async fn login_form(console: &Console) -> (String, String) {
    let form = console
        .request(GUESSER, "GET", "/login", &[], "")
        .await
        .expect("the login form");
    let cookie = set_cookie(&form, "canopy_login").expect("a login cookie");
    let body = form.text();
    let marker = "name=\"csrf\" value=\"";
    let start = body.find(marker).expect("a csrf field") + marker.len();
    let token = body[start..start + body[start..].find('"').expect("end")].to_owned();
    (cookie, token)
}

fn login_attempt(from: IpAddr, cookie: &str, token: &str, user: &str, password: &str) -> Attempt {
    Attempt {
        from,
        method: "POST",
        path: "/login",
        headers: vec![
            ("cookie".to_owned(), cookie.to_owned()),
            (
                "content-type".to_owned(),
                "application/x-www-form-urlencoded".to_owned(),
            ),
        ],
        body: format!(
            "csrf={token}&user={user}&password={}",
            password.replace(' ', "+").replace('\'', "%27")
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_form_logins_stays_in_bounded_memory() {
    let console = Arc::new(Console::start("admin", PASSWORD).await);
    let rss = RssSampler::start(console.pid());
    let (cookie, token) = login_form(&console).await;
    let (c, t) = (cookie.clone(), token.clone());
    let one_guesser = flood(&console, move |client, round| {
        login_attempt(GUESSER, &c, &t, "admin", &format!("guess {client}.{round}"))
    })
    .await;
    let (c, t) = (cookie.clone(), token.clone());
    let many_guessers = flood(&console, move |client, _| {
        login_attempt(
            spread_address(client),
            &c,
            &t,
            &format!("user{client}"),
            "guess",
        )
    })
    .await;
    assert_bounded("after 300 wrong form logins", &rss);
    assert_only_refusals("one address guessing admin", &one_guesser);
    assert_only_refusals("fifty addresses guessing", &many_guessers);
    assert!(
        one_guesser.get(&429).copied().unwrap_or_default() > FLOOD,
        "most guesses at one account are refused without a password check: {one_guesser:?}"
    );

    wait_for("the right password to log in", LOCKED_OUT_AT_MOST, || {
        let console = console.clone();
        let attempt = login_attempt(ADMIN, &cookie, &token, "admin", PASSWORD);
        async move {
            let headers: Vec<(&str, &str)> = attempt
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let answer = console
                .request(ADMIN, "POST", "/login", &headers, &attempt.body)
                .await;
            matches!(answer, Ok(f) if f.status == 303 && set_cookie(&f, "canopy_session").is_some())
        }
    })
    .await;
    assert_bounded("after the right password", &rss);
}

#[tokio::test]
async fn a_page_reached_through_a_rebinding_name_gets_nothing() {
    let console = Console::start("admin", PASSWORD).await;
    let port = console.addr.port();
    // The attacker's name now resolves to 127.0.0.1: the browser connects here and says
    // whose page it thinks this is.
    let rebound = format!("attacker.example:{port}");
    let right = basic("admin", PASSWORD);
    for (path, authorization) in [("/login", ""), ("/metrics", right.as_str()), ("/", "")] {
        let mut headers = vec![("host", rebound.as_str())];
        if !authorization.is_empty() {
            headers.push(("authorization", authorization));
        }
        let answer = console
            .request(GUESSER, "GET", path, &headers, "")
            .await
            .expect("an answer");
        assert_eq!(answer.status, 421, "{path}: {}", answer.text());
        assert!(
            answer.text().contains("attacker.example") && answer.text().contains("manager_hosts"),
            "{}",
            answer.text()
        );
    }
    for host in [
        console.host(),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let answer = console
            .request(GUESSER, "GET", "/login", &[("host", &host)], "")
            .await
            .expect("an answer");
        assert_eq!(answer.status, 200, "{host}: {}", answer.text());
    }

    // A form posted by another site's page, to the right address, is refused by its Origin.
    let (cookie, token) = login_form(&console).await;
    let login = login_attempt(ADMIN, &cookie, &token, "admin", PASSWORD);
    let post = |origin: String| {
        let console = &console;
        let login = &login;
        async move {
            let mut headers: Vec<(&str, &str)> = login
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            headers.push(("origin", &origin));
            console
                .request(ADMIN, "POST", "/login", &headers, &login.body)
                .await
                .expect("an answer")
        }
    };
    let refused = post("http://attacker.example".to_owned()).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(
        refused.text().contains("attacker.example"),
        "{}",
        refused.text()
    );
    let own = post(format!("http://{}", console.host())).await;
    assert_eq!(own.status, 303, "{}", own.text());

    // A name the administrator gives the console is answered from then on.
    let set = canopy_cli(
        console.data_dir(),
        &["config", "set", "manager_hosts", "console.example"],
    );
    assert!(set.status.success(), "{}", stderr(&set));
    let named = console
        .request(
            GUESSER,
            "GET",
            "/login",
            &[("host", &format!("console.example:{port}"))],
            "",
        )
        .await
        .expect("an answer");
    assert_eq!(named.status, 200, "{}", named.text());
}
