//! The console end to end, in a real headless Chromium driven over WebDriver: real proxies,
//! the real `canopy-manager` process, the real database. Elements are found as a person
//! finds them: by label and button text. Each page is saved as a screenshot under
//! `target/screenshots/`.
//!
//! Without chromedriver these tests say so and pass, except under CI (`CI=true`), where a
//! missing browser is a failure.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper::{Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use canopy_config::versions::{Db, VersionState};
use canopy_manager::accounts;
use common::{free_port, free_udp_port, full, wait_for, Canopy, Origin, OriginBody};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const PASSWORD: &str = "a long enough password";
/// How long a page may take to show what a step waits for.
const PAGE: Duration = Duration::from_secs(15);

fn cacheable(body: &'static str) -> Response<OriginBody> {
    Response::builder()
        .header("cache-control", "max-age=300")
        .body(full(body))
        .expect("response")
}

/// A child process, started in a process group of its own, that is stopped with everything
/// it started when the test ends, however it ends: SIGTERM first, so that `canopy run`
/// stops its children itself, then SIGKILL to the group, so that no Chromium that
/// chromedriver started is left behind.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while matches!(self.0.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

fn binary(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_canopy")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn wait_for_port(port: u16, what: &str) {
    wait_for(what, PAGE, || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
}

/// The console of `canopy`'s data dir, as its own process on a free port, with an account.
async fn start_console(canopy: &Canopy) -> (Process, String) {
    let db = Db::open(&canopy.data_dir().join("canopy.db"))
        .await
        .expect("db");
    accounts::set_password(&db, "admin", PASSWORD)
        .await
        .expect("password");
    drop(db);
    let port = free_port();
    let log = std::fs::File::create(canopy.data_dir().join("manager.log")).expect("log");
    let child = Command::new(binary("canopy-manager"))
        .arg("--db")
        .arg(canopy.data_dir().join("canopy.db"))
        .arg("--control")
        .arg(canopy.control_path())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--sample-every")
        .arg("1")
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start canopy-manager");
    let console = Process(child);
    wait_for_port(port, "the console to listen").await;
    (console, format!("http://127.0.0.1:{port}"))
}

/// Chromium under chromedriver, with a fresh profile, logged in to nothing yet.
struct Browser {
    client: Client,
    console: String,
    name: &'static str,
    _driver: Process,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// `None` when chromedriver is not installed and this is not CI.
    async fn start(console: &str, name: &'static str) -> Option<Browser> {
        if !Path::new(CHROMEDRIVER).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{CHROMEDRIVER} is missing: apt-get install -y chromium chromium-driver"
            );
            eprintln!("skipped: {CHROMEDRIVER} is missing (apt-get install chromium-driver)");
            return None;
        }
        let port = free_port();
        let driver = Process(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("start chromedriver"),
        );
        wait_for_port(port, "chromedriver to listen").await;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session with Chromium");
        Some(Browser {
            client,
            console: console.to_owned(),
            name,
            _driver: driver,
            _profile: profile,
        })
    }

    async fn open(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.console))
            .await
            .expect("open page");
    }

    async fn screenshot(&self, page: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = screenshot_dir().join(format!("{}-{page}.png", self.name));
        std::fs::write(&path, png).expect("save screenshot");
    }

    /// Waits for an element, so a step never races the page it follows.
    async fn wait(&self, xpath: &str) -> Element {
        self.client
            .wait()
            .at_most(PAGE)
            .for_element(Locator::XPath(xpath))
            .await
            .unwrap_or_else(|e| panic!("{xpath} did not appear: {e}"))
    }

    /// The form control a person finds by its label's text.
    async fn field(&self, label: &str) -> Element {
        let label = self
            .wait(&format!("//label[normalize-space()='{label}']"))
            .await;
        let id = label
            .attr("for")
            .await
            .expect("label")
            .expect("label has for=");
        self.client
            .find(Locator::Id(&id))
            .await
            .expect("labelled control")
    }

    async fn fill(&self, label: &str, text: &str) {
        let field = self.field(label).await;
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    async fn choose(&self, label: &str, option: &str) {
        let select = self.field(label).await;
        select
            .find(Locator::XPath(&format!(
                "./option[normalize-space()='{option}']"
            )))
            .await
            .unwrap_or_else(|e| panic!("no option {option:?} in {label}: {e}"))
            .click()
            .await
            .expect("choose");
    }

    async fn press(&self, button: &str) {
        self.wait(&format!("//button[normalize-space()='{button}']"))
            .await
            .click()
            .await
            .expect("press");
    }

    async fn follow(&self, link: &str) {
        self.wait(&format!("//a[normalize-space()='{link}']"))
            .await
            .click()
            .await
            .expect("follow");
    }

    /// The text of the notice that contains `words`, once it is shown.
    async fn notice(&self, words: &str) -> String {
        self.wait(&format!(
            "//*[contains(@class,'notice') and contains(., \"{words}\")]"
        ))
        .await
        .text()
        .await
        .expect("notice text")
    }

    async fn heading(&self, text: &str) {
        self.wait(&format!("//h1[contains(normalize-space(), '{text}')]"))
            .await;
    }

    async fn log_in(&self) {
        self.open("/login").await;
        self.heading("Canopy").await;
        self.screenshot("login").await;
        self.fill("User name", "admin").await;
        self.fill("Password", PASSWORD).await;
        self.press("Log in").await;
        self.heading("Dashboard").await;
    }
}

#[tokio::test]
async fn a_parent_added_in_the_console_is_used_without_restarting_the_proxy() {
    let origin = Origin::start(|_| cacheable("from the origin")).await;
    let parent = Canopy::start(&[("visible_name", "the-parent")]).await;
    let proxy = Canopy::start(&[]).await;
    let pid = proxy.status().await.expect("status").pid;
    let (_console, url) = start_console(&proxy).await;
    let Some(browser) = Browser::start(&url, "parent").await else {
        return;
    };
    browser.log_in().await;
    browser.wait("//p[contains(., 'pid')]").await;
    browser.screenshot("dashboard").await;

    browser.follow("Routing").await;
    browser.heading("Routing").await;
    browser.screenshot("routing").await;
    assert!(
        browser
            .field("parent_caching")
            .await
            .is_selected()
            .await
            .expect("checkbox"),
        "parent caching is on by default"
    );
    browser.fill("parents", &format!("{};", parent.addr)).await;
    browser.press("Make These Changes").await;
    let said = browser.notice("Applied").await;
    browser.screenshot("routing-applied").await;
    assert!(said.contains("Applied: version 3 is in force"), "{said}");

    let r = proxy.get(&origin.url("/through-the-parent")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "from the origin");
    assert!(
        r.header("via").contains("the-parent"),
        "{}",
        r.header("via")
    );
    assert_eq!(parent.stats().await.requests, 1);
    assert_eq!(proxy.status().await.expect("status").pid, pid, "no restart");

    browser.follow("ICP").await;
    browser.heading("ICP").await;
    browser.fill("icp_port", "70000").await;
    browser.press("Make These Changes").await;
    let error = browser
        .wait("//p[@class='error' and contains(., 'port number')]")
        .await;
    browser.screenshot("routing-invalid").await;
    assert!(error.text().await.expect("text").contains("70000"));
    browser.notice("Nothing was saved").await;

    browser.follow("Peers").await;
    browser.heading("Peers").await;
    browser
        .wait(&format!("//td[contains(., '{}')]", parent.addr))
        .await;
    browser.screenshot("peers").await;
    browser.follow(&parent.addr.to_string()).await;
    browser
        .wait("//figcaption[contains(., 'HTTP through this peer')]")
        .await;
    browser.screenshot("peer").await;
    browser.fill("Reason", "maintenance").await;
    browser.press("Take down").await;
    browser.notice("gets no requests and no ICP queries").await;
    browser.screenshot("peer-down").await;
    let direct = proxy.get(&origin.url("/while-the-parent-is-down")).await;
    assert_eq!(direct.status, StatusCode::OK);
    assert!(
        !direct.header("via").contains("the-parent"),
        "{}",
        direct.header("via")
    );
    browser.press("Bring up").await;
    browser.notice("is up, back to the health checks").await;

    browser.follow("ICP Peers").await;
    browser.follow("Add a peer").await;
    browser.heading("Add a peer").await;
    browser.fill("Name", "squid").await;
    browser.fill("Host", "127.0.0.2").await;
    browser.choose("Type", "Sibling").await;
    browser.screenshot("peer-form").await;
    browser.press("Make These Changes").await;
    browser.notice("Applied").await;
    browser.wait("//td[normalize-space()='127.0.0.2']").await;
    browser.screenshot("icp-peers").await;

    browser.follow("History").await;
    browser.heading("History").await;
    browser
        .wait(&format!(
            "//li[contains(., 'parents: (empty) → {};')]",
            parent.addr
        ))
        .await;
    browser.screenshot("history").await;
    browser.follow("Version 3").await;
    browser
        .wait("//h2[normalize-space()='Restoring it would change']")
        .await;
    browser.screenshot("version").await;

    // Live figures: the dashboard's request count follows the proxy without a reload.
    browser.follow("Dashboard").await;
    browser.wait("//h2[normalize-space()='Requests']").await;
    browser
        .client
        .execute("window.stayedOnThisPage = true;", vec![])
        .await
        .expect("mark the page");
    proxy.get(&origin.url("/second")).await;
    browser
        .wait("//div[@class='card' and h2='Requests']/p[normalize-space()='2']")
        .await;
    let same_page = browser
        .client
        .execute("return window.stayedOnThisPage === true;", vec![])
        .await
        .expect("read the mark");
    assert_eq!(
        same_page,
        json!(true),
        "the figures changed without a reload"
    );
    // Rates are drawn only for whole minutes; the proxy has run for part of one.
    let chart = browser
        .wait("//figure[figcaption[contains(., 'Requests per second')]]")
        .await;
    assert!(
        chart
            .find_all(Locator::XPath(
                ".//*[name()='path' and string-length(@d) > 0]"
            ))
            .await
            .expect("look for a line")
            .is_empty(),
        "no rate from part of a minute"
    );
    browser.screenshot("dashboard-live").await;

    browser
        .client
        .set_window_size(390, 844)
        .await
        .expect("phone size");
    browser.open("/").await;
    browser.heading("Dashboard").await;
    browser.screenshot("dashboard-phone").await;
    browser.open("/configure/routing").await;
    browser.heading("Routing").await;
    browser.screenshot("routing-phone").await;
}

#[tokio::test]
async fn with_the_proxy_stopped_the_change_is_saved_and_canopy_run_starts_with_it() {
    let manager_port = free_port();
    let mut proxy =
        Canopy::start(&[("manager_listen", &format!("127.0.0.1:{manager_port}"))]).await;
    proxy.kill();
    let (_console, url) = start_console(&proxy).await;
    let Some(browser) = Browser::start(&url, "stopped").await else {
        return;
    };
    browser.log_in().await;
    browser.screenshot("dashboard").await;
    browser.follow("Routing").await;
    browser.fill("parents", "127.0.0.1:3999;").await;
    browser.press("Make These Changes").await;
    let said = browser.notice("not running").await;
    browser.screenshot("routing-saved").await;
    assert!(
        said.contains("Saved as version 3, but the proxy is not running"),
        "{said}"
    );
    let db = Db::open(&proxy.data_dir().join("canopy.db"))
        .await
        .expect("db");
    let saved = db.latest().await.expect("latest");
    assert_eq!(saved.id, 3);
    assert_eq!(saved.state, VersionState::Saved);
    assert_eq!(saved.config.parents.to_string(), "127.0.0.1:3999;");

    let run = Process(
        Command::new(env!("CARGO_BIN_EXE_canopy"))
            .arg("--data-dir")
            .arg(proxy.data_dir())
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("canopy run"),
    );
    let control = proxy.control_path();
    wait_for("canopy run to start the proxy on version 3", PAGE, || {
        let control = control.clone();
        async move {
            canopy_config::control::call_typed::<canopy_config::control::StatusReply>(
                &control,
                canopy_config::control::Command::Status,
            )
            .await
            .is_ok_and(|s| s.config_version == 3)
        }
    })
    .await;
    drop(run);
}

#[tokio::test]
async fn a_change_the_proxy_refuses_is_shown_with_its_reason_and_the_old_one_stays() {
    let origin = Origin::start(|_| cacheable("still served")).await;
    let proxy = Canopy::start(&[]).await;
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    let taken_port = taken.local_addr().expect("addr").port();
    let (_console, url) = start_console(&proxy).await;
    let Some(browser) = Browser::start(&url, "rejected").await else {
        return;
    };
    browser.log_in().await;
    browser.follow("ICP").await;
    browser.choose("icp_mode", "Send and receive queries").await;
    browser.fill("icp_port", &taken_port.to_string()).await;
    browser.press("Make These Changes").await;
    let said = browser.notice("rejected by the proxy").await;
    browser.screenshot("routing-rejected").await;
    assert!(said.contains("Version 3 was saved but rejected"), "{said}");
    assert!(
        said.contains(&taken_port.to_string()),
        "the reason names the port: {said}"
    );
    assert!(said.contains("version 2 is still in force"), "{said}");
    let status = proxy.status().await.expect("status");
    assert_eq!(status.config_version, 2);
    let r = proxy.get(&origin.url("/old-settings")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "still served");
    browser.follow("History").await;
    browser
        .wait("//span[contains(@class,'badge') and .='rejected']")
        .await;
    browser.screenshot("history-rejected").await;
}

#[tokio::test]
async fn a_rule_added_in_the_console_sends_its_domain_to_the_rule_s_parent() {
    let origin = Origin::start(|seen| {
        Response::builder()
            .header("cache-control", "no-store")
            .body(full(format!("origin saw {}", seen.path)))
            .expect("response")
    })
    .await;
    // The rule's parent knows a.test only as a name: it sends everything to the origin as
    // its own parent.
    let parent = Canopy::start(&[
        ("visible_name", "rule-parent"),
        ("parents", &format!("{};", origin.addr)),
        ("never_direct", "on"),
    ])
    .await;
    let proxy = Canopy::start(&[("debug_headers", "on")]).await;
    let (_console, url) = start_console(&proxy).await;
    let Some(browser) = Browser::start(&url, "rules").await else {
        return;
    };
    browser.log_in().await;
    browser.follow("Routing").await;
    browser.heading("Routing").await;
    browser.follow("Add a rule").await;
    browser.heading("Add a rule").await;
    browser.fill("Destination domain", "a.test").await;
    browser.fill("Parents", &format!("{};", parent.addr)).await;
    browser
        .field("Go direct")
        .await
        .click()
        .await
        .expect("untick");
    browser.screenshot("rule-form").await;
    browser.press("Make These Changes").await;
    let said = browser.notice("Applied").await;
    assert!(said.contains("Applied: version 3 is in force"), "{said}");
    browser
        .wait("//table//td[code[normalize-space()='dest_domain=a.test']]")
        .await;
    browser.screenshot("routing-rule").await;

    let routed = proxy.get("http://a.test/x").await;
    assert_eq!(routed.status, StatusCode::OK);
    assert_eq!(routed.text(), "origin saw /x");
    assert!(
        routed
            .header("x-canopy-hop")
            .starts_with(&format!("parent={} rule=1 ", parent.addr)),
        "{}",
        routed.header("x-canopy-hop")
    );
    assert_eq!(parent.stats().await.requests, 1);

    // A second rule, moved above the first and removed again with the table's buttons.
    browser.follow("Add a rule").await;
    browser.heading("Add a rule").await;
    browser.fill("URL regex", "(").await;
    browser.press("Make These Changes").await;
    browser
        .wait("//p[@class='error' and contains(., 'does not compile')]")
        .await;
    browser.notice("Nothing was saved").await;
    browser.screenshot("rule-invalid").await;
    browser.fill("URL regex", "").await;
    browser.fill("Destination host", "b.test").await;
    browser.press("Make These Changes").await;
    browser.notice("version 4 is in force").await;
    browser.press("Up").await;
    browser.notice("version 5 is in force").await;
    browser
        .client
        .execute(
            "document.querySelector('table.rules').scrollIntoView();",
            vec![],
        )
        .await
        .expect("scroll to the rules");
    browser.screenshot("routing-rule-moved").await;
    let db = Db::open(&proxy.data_dir().join("canopy.db"))
        .await
        .expect("db");
    let rules = db.latest().await.expect("latest").config.parent_rules;
    assert_eq!(rules[0].dest_host.as_deref(), Some("b.test"));
    assert_eq!(rules[1].dest_domain.as_deref(), Some("a.test"));
    browser.press("Remove").await;
    browser.notice("version 6 is in force").await;
    let rules = db.latest().await.expect("latest").config.parent_rules;
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].dest_domain.as_deref(), Some("a.test"));
    browser.follow("Import parent.config").await;
    browser.heading("Import parent.config").await;
    let lines = browser
        .field("parent.config lines")
        .await
        .prop("value")
        .await
        .expect("textarea")
        .unwrap_or_default();
    assert!(
        lines.starts_with(&format!(
            "dest_domain=a.test parent=\"{};\" round_robin=false go_direct=false",
            parent.addr
        )),
        "{lines}"
    );
    browser.screenshot("import").await;
    let again = proxy.get("http://www.a.test/y").await;
    assert_eq!(again.text(), "origin saw /y");
    assert!(
        again.header("x-canopy-hop").contains("rule=1"),
        "{}",
        again.header("x-canopy-hop")
    );
}

/// A proxy, its console, and a browser logged in to it that saved version 3 with an ICP
/// port another socket holds, so the proxy rejected it and version 2 stayed in force.
struct Rejected {
    proxy: Canopy,
    /// The socket that holds the port, for as long as the test runs.
    _taken: std::net::UdpSocket,
    taken_port: u16,
    _console: Process,
    browser: Browser,
}

impl Rejected {
    /// `None` when there is no browser (see [`Browser::start`]).
    async fn start(name: &'static str) -> Option<Rejected> {
        let proxy = Canopy::start(&[]).await;
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        let taken_port = taken.local_addr().expect("addr").port();
        let (console, url) = start_console(&proxy).await;
        let browser = Browser::start(&url, name).await?;
        browser.log_in().await;
        browser.follow("ICP").await;
        browser.choose("icp_mode", "Send and receive queries").await;
        browser.fill("icp_port", &taken_port.to_string()).await;
        browser.press("Make These Changes").await;
        let said = browser.notice("rejected by the proxy").await;
        assert!(said.contains("Version 3 was saved but rejected"), "{said}");
        Some(Rejected {
            proxy,
            _taken: taken,
            taken_port,
            _console: console,
            browser,
        })
    }
}

impl Browser {
    /// Whether the page shown has the notice of a rejected version.
    async fn has_rejected_notice(&self) -> bool {
        self.client
            .find(Locator::Css("#rejected-version"))
            .await
            .is_ok()
    }
}

async fn in_force(proxy: &Canopy) -> i64 {
    proxy.status().await.expect("status").config_version
}

#[tokio::test]
async fn a_rejected_version_is_opened_from_its_notice_fixed_and_applied() {
    let Some(rejected) = Rejected::start("reopened").await else {
        return;
    };
    let (proxy, browser, taken_port) = (&rejected.proxy, &rejected.browser, rejected.taken_port);
    assert_eq!(in_force(proxy).await, 2);

    browser.follow("ICP Peers").await;
    browser.heading("ICP Peers").await;
    let said = browser.notice("Version 3 was rejected").await;
    assert!(said.contains(&taken_port.to_string()), "the reason: {said}");
    browser.screenshot("peers-rejected-notice").await;
    browser.follow("Routing").await;
    browser.follow("Add a rule").await;
    browser.heading("Add a rule").await;
    browser.notice("Version 3 was rejected").await;
    browser.screenshot("rule-rejected-notice").await;

    browser.follow("ICP").await;
    browser.follow("Open version 3").await;
    let said = browser.notice("This form shows rejected version 3").await;
    assert!(said.contains(&taken_port.to_string()), "the reason: {said}");
    let port = browser
        .field("icp_port")
        .await
        .prop("value")
        .await
        .expect("icp_port")
        .unwrap_or_default();
    assert_eq!(port, taken_port.to_string(), "the rejected version's value");
    browser.screenshot("routing-rejected-opened").await;
    let free = free_udp_port();
    browser.fill("icp_port", &free.to_string()).await;
    browser.press("Make These Changes").await;
    let said = browser.notice("Applied").await;
    browser.screenshot("routing-fixed").await;
    assert!(said.contains("Applied: version 4 is in force"), "{said}");
    wait_for("the proxy to run version 4", PAGE, || async {
        in_force(proxy).await == 4
    })
    .await;
    let status = proxy.status().await.expect("status");
    assert!(
        status
            .icp_listen
            .as_deref()
            .is_some_and(|icp| icp.ends_with(&format!(":{free}"))),
        "{:?}",
        status.icp_listen
    );
    assert!(
        !browser.has_rejected_notice().await,
        "nothing waits any more"
    );
}

#[tokio::test]
async fn a_discarded_version_leaves_the_forms_and_stays_in_the_history() {
    let Some(rejected) = Rejected::start("discarded").await else {
        return;
    };
    let (proxy, browser) = (&rejected.proxy, &rejected.browser);
    browser.follow("ICP Peers").await;
    browser.notice("Version 3 was rejected").await;
    browser.press("Discard version 3").await;
    let said = browser.notice("is discarded").await;
    assert!(said.contains("Version 3 is discarded"), "{said}");
    browser
        .wait("//li[.//a[normalize-space()='Version 3']]//span[contains(@class,'badge') and .='discarded']")
        .await;
    browser.screenshot("history-discarded").await;
    for (link, heading) in [
        ("ICP Peers", "ICP Peers"),
        ("Routing", "Routing"),
        ("Dashboard", "Dashboard"),
    ] {
        browser.follow(link).await;
        browser.heading(heading).await;
        assert!(
            !browser.has_rejected_notice().await,
            "{link}: the notice is gone"
        );
    }
    let db = Db::open(&proxy.data_dir().join("canopy.db"))
        .await
        .expect("db");
    assert_eq!(db.get(3).await.expect("v3").state, VersionState::Discarded);
    assert_eq!(db.in_force().await.expect("in force").id, 2);
    assert_eq!(in_force(proxy).await, 2);
}

impl Browser {
    /// A screenshot of the whole page at `width` px: the window is made as tall as the page.
    async fn whole_page(&self, width: u32, page: &str) {
        self.client
            .set_window_size(width, 900)
            .await
            .expect("window width");
        let height = self
            .client
            .execute("return document.documentElement.scrollHeight;", vec![])
            .await
            .expect("page height")
            .as_u64()
            .expect("a height");
        self.client
            .set_window_size(width, height as u32 + 140)
            .await
            .expect("window height");
        self.screenshot(page).await;
    }
}

#[tokio::test]
async fn every_settings_page_is_reached_from_the_menu_and_saves_its_changes() {
    let proxy = Canopy::start(&[]).await;
    let (_console, url) = start_console(&proxy).await;
    let Some(browser) = Browser::start(&url, "settings").await else {
        return;
    };
    browser.log_in().await;
    for group in canopy_config::config::Group::ALL {
        browser.follow(group.title()).await;
        browser
            .wait(&format!("//h1[normalize-space()='{}']", group.title()))
            .await;
        browser.whole_page(1280, group.slug()).await;
    }

    browser.follow("Proxy").await;
    let clients = browser.field("allowed_clients").await;
    assert_eq!(clients.tag_name().await.expect("tag"), "textarea");
    browser
        .fill("allowed_clients", "127.0.0.0/8\n10.20.0.0/16")
        .await;
    browser.press("Make These Changes").await;
    browser.notice("Applied: version 3").await;
    let listed = proxy.cli(&["config", "get", "allowed_clients"]);
    assert_eq!(common::stdout(&listed).trim(), "127.0.0.0/8, 10.20.0.0/16");

    browser.follow("Cache").await;
    browser.fill("max_object_size", "2G").await;
    browser.press("Make These Changes").await;
    let error = browser
        .wait("//input[@id='max_object_size']/following-sibling::p[@class='error']")
        .await;
    assert!(
        error
            .text()
            .await
            .expect("text")
            .contains("must not be larger than cache_dir_size"),
        "the error is under its field"
    );
    browser.notice("Nothing was saved").await;
    browser.whole_page(1280, "cache-invalid").await;
    assert_eq!(in_force(&proxy).await, 3);
}

/// The Clients page, reached from the navigation: the child that asked and the stranger
/// answered DENIED, by address; the table fits at 1280 px, and at 800 px the page does not
/// run past the window (the table scrolls in its frame where it must).
#[tokio::test]
async fn the_clients_page_lists_who_asked_and_fits_the_window() {
    let icp_port = free_udp_port();
    let proxy = Canopy::start(&[
        ("icp_mode", "receive"),
        ("icp_port", &icp_port.to_string()),
        ("icp_allowed_clients", "127.0.0.4/32"),
    ])
    .await;
    // An ICP query (RFC 2186): opcode 1, version 2, length, request number, then the URL.
    let url = b"http://example.com/\0";
    let mut query = vec![1, 2, 0, (24 + url.len()) as u8, 0, 0, 0, 7];
    query.extend_from_slice(&[0; 16]);
    query.extend_from_slice(url);
    for from in ["127.0.0.4:0", "127.0.0.3:0"] {
        let socket = tokio::net::UdpSocket::bind(from).await.expect("bind");
        socket
            .send_to(&query, ("127.0.0.1", icp_port))
            .await
            .expect("send");
        let mut reply = [0u8; 512];
        tokio::time::timeout(PAGE, socket.recv_from(&mut reply))
            .await
            .expect("a reply in time")
            .expect("recv");
    }
    let (_console, url) = start_console(&proxy).await;
    let Some(browser) = Browser::start(&url, "clients").await else {
        return;
    };
    browser.log_in().await;
    browser.follow("Clients").await;
    browser.heading("Clients").await;
    let row = browser
        .wait("//tr[td[contains(., '127.0.0.4')]]")
        .await
        .text()
        .await
        .expect("row text");
    assert!(
        row.ends_with("\n1 0 1 0 0 0 0 0 0 B"),
        "one query, answered MISS, nothing served: {row}"
    );
    browser.notice("127.0.0.3 (1)").await;
    for (width, name) in [(1280, "clients"), (800, "clients-800")] {
        browser
            .client
            .set_window_size(width, 900)
            .await
            .expect("window size");
        browser.open("/monitor/clients").await;
        browser.heading("Clients").await;
        browser.screenshot(name).await;
        let measured = browser
            .client
            .execute(
                "const t = document.querySelector('.table-wrap'); \
                 const page = document.documentElement; \
                 return [t.scrollWidth - t.clientWidth, page.scrollWidth - page.clientWidth];",
                vec![],
            )
            .await
            .expect("measure");
        let (table_scrolls, page_overflows) = (measured[0].as_f64(), measured[1].as_f64());
        assert_eq!(page_overflows, Some(0.0), "the page at {width} px");
        if width == 1280 {
            assert_eq!(table_scrolls, Some(0.0), "the whole table at 1280 px");
        }
    }
}

/// What overflows the page sideways: each table wider than the box it scrolls in, and the
/// page itself when it is wider than the window; empty when everything fits.
const OVERFLOW: &str = r#"
const wide = [];
document.querySelectorAll('.table-wrap').forEach((wrap, i) => {
  if (wrap.scrollWidth > wrap.clientWidth) {
    wide.push(`table ${i + 1}: ${wrap.scrollWidth} px in ${wrap.clientWidth} px`);
  }
});
const page = document.documentElement.scrollWidth;
if (page > window.innerWidth) {
  wide.push(`the page: ${page} px in a ${window.innerWidth} px window`);
}
return wide;
"#;

impl Browser {
    /// Screenshots the page shown and checks that nothing on it overflows sideways.
    async fn fits(&self, page: &str) {
        self.screenshot(page).await;
        let wide = self
            .client
            .execute(OVERFLOW, vec![])
            .await
            .expect("measure the page");
        assert_eq!(wide, json!([]), "{page} overflows");
    }
}

/// A config as a busy hierarchy has it: eight ICP peers with long names, three HTTP parents,
/// and routing rules with long matchers and parent lists.
fn busy_hierarchy(config: &mut canopy_config::config::Config) {
    use canopy_config::config::{ParentRule, Peer, PeerKind};
    for i in 0..8u8 {
        config.peers.push(Peer {
            name: format!("frankfurt_datacenter_rack_{i:02}_squid_cache_sibling"),
            host: format!("127.0.{i}.{}", 10 + i),
            kind: if i % 2 == 0 {
                PeerKind::Sibling
            } else {
                PeerKind::Parent
            },
            http_port: 3128 + u16::from(i),
            icp_port: 3130 + u16::from(i),
            ..Peer::default()
        });
    }
    config
        .set(
            "parents",
            "127.0.0.21:3128|3; 127.0.0.22:3128|2; 127.0.0.23:3128;",
        )
        .expect("parents");
    config.set("round_robin", "strict").expect("round robin");
    for i in 0..5 {
        config.parent_rules.push(ParentRule {
            dest_domain: Some(format!(
                "downloads-{i}.very-long-subdomain.example-corporation.test"
            )),
            url_regex: (i % 2 == 0).then(|| r"\.(iso|img|tar\.gz|zip)$".to_owned()),
            scheme: (i == 1).then(|| "https".to_owned()),
            parents: "127.0.0.31:3128|2; 127.0.0.32:3128|2; 127.0.0.33:3128;"
                .parse()
                .expect("parent list"),
            round_robin: "consistent_hash".parse().expect("round robin"),
            go_direct: i % 2 == 1,
            ..ParentRule::default()
        });
    }
}

#[tokio::test]
async fn every_page_fits_a_1280_and_an_800_pixel_window_with_many_peers_and_rules() {
    let proxy = Canopy::start(&[]).await;
    let db = Db::open(&proxy.data_dir().join("canopy.db"))
        .await
        .expect("db");
    let mut config = db.latest().await.expect("latest").config;
    busy_hierarchy(&mut config);
    db.save_change(&config, "test", None).await.expect("saved");
    drop(db);
    let reload = proxy.cli(&["reload"]);
    assert!(reload.status.success(), "{}", common::stderr(&reload));
    let down = proxy.cli(&[
        "parent",
        "down",
        "127.0.0.22:3128",
        "--reason",
        "replacing its disks",
    ]);
    assert!(down.status.success(), "{}", common::stderr(&down));
    let (_console, url) = start_console(&proxy).await;
    let Some(browser) = Browser::start(&url, "layout").await else {
        return;
    };
    browser.log_in().await;
    let peer = "frankfurt_datacenter_rack_03_squid_cache_sibling";
    for width in [1280, 800] {
        browser
            .client
            .set_window_size(width, 900)
            .await
            .expect("window size");
        browser.open("/monitor/peers").await;
        browser
            .wait(&format!("//a[normalize-space()='{peer}']"))
            .await;
        browser.fits(&format!("{width}-peers")).await;
        browser.open("/configure/routing").await;
        browser.wait("//table[contains(@class,'rules')]").await;
        browser.fits(&format!("{width}-routing")).await;
        browser
            .client
            .execute(
                "document.querySelector('table.rules').scrollIntoView();",
                vec![],
            )
            .await
            .expect("scroll to the rules");
        browser.screenshot(&format!("{width}-routing-rules")).await;
        browser.open("/configure/history").await;
        browser.heading("History").await;
        browser.fits(&format!("{width}-history")).await;
        browser.open(&format!("/monitor/peers/{peer}")).await;
        browser.heading(peer).await;
        browser.fits(&format!("{width}-peer")).await;
        browser.open("/configure/peers").await;
        browser.heading("ICP Peers").await;
        browser.fits(&format!("{width}-icp-peers")).await;
        browser.open("/configure/history/1/restore").await;
        browser.heading("Restore version 1?").await;
        browser.fits(&format!("{width}-restore")).await;
        browser.open("/monitor/peers/nobody").await;
        browser.heading("Not found").await;
        browser.fits(&format!("{width}-not-found")).await;
        for group in canopy_config::config::Group::ALL {
            browser.open(&format!("/configure/{}", group.slug())).await;
            browser.heading(group.title()).await;
            browser
                .fits(&format!("{width}-settings-{}", group.slug()))
                .await;
        }
        browser.open("/configure/accounts").await;
        browser.heading("Accounts").await;
        browser.fits(&format!("{width}-accounts")).await;
        browser.open("/monitor/clients").await;
        browser.heading("Clients").await;
        browser.fits(&format!("{width}-clients")).await;
        browser.open("/").await;
        browser.wait("//div[@id='disk-cache']").await;
        browser.fits(&format!("{width}-dashboard")).await;
    }
}
