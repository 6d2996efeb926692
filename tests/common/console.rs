//! A real `canopy-manager` process on a temporary data dir and a free loopback port, with
//! one account, and a client that speaks to it from any loopback source address.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

use canopy_config::database::DatabaseUrl;
use canopy_config::versions::Db;
use canopy_manager::accounts;

use super::{binary, free_port, wait_for, Canopy, Fetched};

/// A running console, on a data dir of its own (no proxy beside it: its control socket is
/// absent) or on a running proxy's.
pub struct Console {
    _dir: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    pub addr: SocketAddr,
    child: Child,
}

impl Console {
    /// Creates `user` with `password`, then starts the console and waits until it listens.
    pub async fn start(user: &str, password: &str) -> Console {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_owned();
        let mut console = Console::launch(data_dir, user, password).await;
        console._dir = Some(dir);
        console
    }

    /// As [`Console::start`], on the data dir and control socket of the running `proxy`.
    pub async fn beside(proxy: &Canopy, user: &str, password: &str) -> Console {
        Console::on(proxy.data_dir(), user, password).await
    }

    /// As [`Console::start`], on the data dir `dir`, where a proxy may run (its database
    /// and its control socket).
    pub async fn on(dir: &Path, user: &str, password: &str) -> Console {
        Console::launch(dir.to_owned(), user, password).await
    }

    /// The console of node `node` of a fleet on `url`, on the node's data dir `dir`,
    /// sampling every `sample_every_s`; `user` is made first when the database answers.
    pub async fn on_fleet(
        dir: &Path,
        url: &DatabaseUrl,
        node: &str,
        sample_every_s: u64,
        user: &str,
        password: &str,
    ) -> Console {
        if let Ok(db) = Db::connect(url).await {
            accounts::set_password(&db, user, password)
                .await
                .expect("account");
        }
        let fleet = ["--database", &url.as_arg(), "--node", node];
        Console::spawn(dir.to_owned(), &fleet, sample_every_s).await
    }

    async fn launch(data_dir: PathBuf, user: &str, password: &str) -> Console {
        let db = Db::open(&data_dir.join("canopy.db")).await.expect("db");
        accounts::set_password(&db, user, password)
            .await
            .expect("account");
        drop(db);
        Console::spawn(data_dir, &[], 60).await
    }

    async fn spawn(data_dir: PathBuf, args: &[&str], sample_every_s: u64) -> Console {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(data_dir.join("manager.log")).expect("manager log");
        let child = Command::new(binary("canopy-manager"))
            .arg("--db")
            .arg(data_dir.join("canopy.db"))
            .arg("--control")
            .arg(data_dir.join("canopy.sock"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--sample-every")
            .arg(sample_every_s.to_string())
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("CANOPY_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start canopy-manager");
        wait_for("the console to listen", Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        Console {
            _dir: None,
            data_dir,
            addr,
            child,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Host` as a browser at `http://127.0.0.1:PORT/` sends it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Sends one request on a connection of its own from `from` (any 127.0.0.0/8 address),
    /// with `Host` set to this console's address unless `headers` give one.
    pub async fn request(
        &self,
        from: IpAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Fetched, String> {
        let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(from, 0))
            .map_err(|e| e.to_string())?;
        let stream = socket.connect(self.addr).await.map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut builder = Request::builder().method(method).uri(path);
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            builder = builder.header("host", self.host());
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Fetched {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Logs in through the login form from 127.0.0.1 (a password of letters, digits and
    /// spaces only) and gives the session's cookie.
    pub async fn session(&self, user: &str, password: &str) -> String {
        let from = IpAddr::from([127, 0, 0, 1]);
        let form = self.request(from, "GET", "/login", &[], "").await;
        let form = form.expect("the login form");
        let login = set_cookie(&form, "canopy_login").expect("a login cookie");
        let csrf = hidden_input(&form.text(), "csrf");
        let body = format!(
            "csrf={csrf}&user={user}&password={}",
            password.replace(' ', "+")
        );
        let form_type = ("content-type", "application/x-www-form-urlencoded");
        let answer = self
            .request(
                from,
                "POST",
                "/login",
                &[("cookie", &login), form_type],
                &body,
            )
            .await
            .expect("logging in");
        set_cookie(&answer, "canopy_session").expect("a session cookie")
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name=value` of the `Set-Cookie` called `name`.
pub fn set_cookie(fetched: &Fetched, name: &str) -> Option<String> {
    fetched
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

/// The `Set-Cookie` called `name`, as `name=value`; a page without it fails the test.
pub fn cookie(fetched: &Fetched, name: &str) -> String {
    set_cookie(fetched, name).unwrap_or_else(|| panic!("no {name} cookie"))
}

/// `fields` as an `application/x-www-form-urlencoded` body.
pub fn encode_form(fields: &[(&str, String)]) -> String {
    let escape = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let pairs: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect();
    pairs.join("&")
}

/// The value of the hidden input `name` of a page.
pub fn hidden_input(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no {name}")) + marker.len();
    page[start..start + page[start..].find('"').expect("end")].to_owned()
}
