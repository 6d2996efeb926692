//! Where the proxy and the console listen can change live: a new `bind_address` on the same
//! port, and a new `manager_listen`, each applied by `canopy reload` with no restart.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

async fn listens(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

/// From every address (0.0.0.0) to 127.0.0.1 on the same port, and back: the proxy's own
/// listener used to hold the port ("cannot listen on 127.0.0.1:P: Address already in use").
#[tokio::test]
async fn bind_address_changes_on_the_same_port_without_a_restart() {
    let origin = Origin::start(|_| hyper::Response::new(full("hello"))).await;
    let proxy = Canopy::start(&[("bind_address", "")]).await;
    let port = proxy.addr.port();
    let elsewhere = SocketAddr::from(([127, 0, 0, 2], port));
    assert!(listens(elsewhere).await, "0.0.0.0 takes 127.0.0.2 too");

    proxy.reconfigure(&[("bind_address", "127.0.0.1")]);
    let status = proxy.status().await.unwrap();
    assert_eq!(status.http_listen, format!("127.0.0.1:{port}"));
    wait_for(
        "the old listener on every address to close",
        Duration::from_secs(10),
        || async { !listens(elsewhere).await },
    )
    .await;
    assert_eq!(proxy.get(&origin.url("/a")).await.text(), "hello");

    proxy.reconfigure(&[("bind_address", "")]);
    assert_eq!(
        proxy.status().await.unwrap().http_listen,
        format!("0.0.0.0:{port}")
    );
    assert!(listens(elsewhere).await, "back on every address");
    assert_eq!(proxy.get(&origin.url("/b")).await.text(), "hello");
}

/// Sharing the port with its own listener during a reload must not let a second proxy
/// share it: the port another process listens on is still refused.
#[tokio::test]
async fn a_port_another_process_listens_on_is_still_refused() {
    let proxy = Canopy::start(&[]).await;
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let set = proxy.cli(&["config", "set", "http_port", &port]);
    assert!(set.status.success(), "{}", stderr(&set));
    let reload = proxy.cli(&["reload"]);
    assert!(!reload.status.success());
    assert!(
        stderr(&reload).contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        stderr(&reload)
    );
    assert_eq!(proxy.status().await.unwrap().config_version, 2);
}

/// Another Canopy's port, which it binds the way this one does, is refused by a reload and
/// at a start (which then runs the version last in force).
#[tokio::test]
async fn the_port_of_another_canopy_is_refused() {
    let first = Canopy::start(&[]).await;
    let port = first.addr.port().to_string();
    let mut second = Canopy::start(&[]).await;
    let own = second.addr;
    let set = second.cli(&["config", "set", "http_port", &port]);
    assert!(set.status.success(), "{}", stderr(&set));
    let reload = second.cli(&["reload"]);
    assert!(
        stderr(&reload).contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        stderr(&reload)
    );
    second.kill();
    let set = second.cli(&["config", "set", "http_port", &port]);
    assert!(set.status.success(), "{}", stderr(&set));
    second.restart().await;
    assert_eq!(second.addr, own, "{}", second.log());
    assert!(
        second
            .log()
            .contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        second.log()
    );
}

/// A console started without `--listen`, where the version in force says.
fn console_of(proxy: &Canopy) -> Child {
    let log = std::fs::File::create(proxy.data_dir().join("manager.log")).unwrap();
    Command::new(binary("canopy-manager"))
        .arg("--db")
        .arg(proxy.data_dir().join("canopy.db"))
        .arg("--control")
        .arg(proxy.control_path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start canopy-manager")
}

struct Stop(Child);

/// A proxy and its console, which listens on a free port; once it answers there.
async fn proxy_and_console() -> (Canopy, Stop, SocketAddr) {
    let first: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let proxy = Canopy::start(&[("manager_listen", &first.to_string())]).await;
    let console = Stop(console_of(&proxy));
    wait_for(
        "the console on its first address",
        Duration::from_secs(20),
        || listens(first),
    )
    .await;
    (proxy, console, first)
}

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `manager_listen` used to be reported applied while the console stayed on its old port.
#[tokio::test]
async fn the_console_moves_to_a_new_manager_listen() {
    let (proxy, _console, old) = proxy_and_console().await;

    let new: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    proxy.reconfigure(&[("manager_listen", &new.to_string())]);
    let log = proxy.data_dir().join("manager.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !listens(new).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the console did not move: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for(
        "the old console address to close",
        Duration::from_secs(10),
        || async { !listens(old).await },
    )
    .await;
    let page = request_via(new, None, "GET", &format!("http://{new}/login"), &[])
        .await
        .unwrap();
    assert_eq!(page.status, 200);
}

/// A `manager_listen` another process holds is refused by the reload with the reason, and
/// the console stays where it is.
#[tokio::test]
async fn a_taken_manager_listen_is_refused_and_the_console_stays() {
    let (proxy, _console, old) = proxy_and_console().await;
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let set = proxy.cli(&["config", "set", "manager_listen", &taken]);
    assert!(set.status.success(), "{}", stderr(&set));
    let reload = proxy.cli(&["reload"]);
    assert!(!reload.status.success());
    assert!(
        stderr(&reload).contains(&format!("the console cannot listen on {taken}")),
        "{}",
        stderr(&reload)
    );
    assert_eq!(proxy.status().await.unwrap().config_version, 2);
    assert!(listens(old).await);
}
