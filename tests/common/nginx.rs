//! A real nginx as an origin server in the tests: in the foreground (`daemon off`, no
//! master process), on a free loopback port, with its config, logs, pid and temporary
//! files in a temporary folder. nginx is the origin the request-smuggling attacks were
//! first shown against: it honours `Content-Length` on a GET, answers before it has read
//! the body, and then discards the body from the connection.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// nginx's binary, or `None` (said loudly) when it is not installed; under `CI=true` a
/// missing nginx fails the test instead.
pub fn nginx_binary() -> Option<PathBuf> {
    super::installed("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"])
}

/// A running nginx.
pub struct Nginx {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    child: Child,
}

impl Nginx {
    /// Starts nginx serving `<dir>/www` with `locations` (nginx `location` blocks) added to
    /// its one server, and waits until it accepts connections.
    pub fn start(binary: &std::path::Path, locations: &str) -> Nginx {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display();
        std::fs::create_dir(dir.path().join("www")).expect("www dir");
        let port = free_port();
        // As root nginx would switch its workers to `nobody`; with no master process it
        // stays who it is, and `user` must then name that user or be left out.
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let user = if root { "user root;" } else { "" };
        let config = format!(
            "{user}\n\
             daemon off;\n\
             master_process off;\n\
             worker_processes 1;\n\
             error_log {d}/error.log info;\n\
             pid {d}/nginx.pid;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
               access_log {d}/access.log;\n\
               client_body_temp_path {d}/client_body;\n\
               proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               default_type text/plain;\n\
               keepalive_requests 100000;\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 root {d}/www;\n\
                 {locations}\n\
               }}\n\
             }}\n"
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config).expect("write nginx.conf");
        let stderr = std::fs::File::create(dir.path().join("stderr")).expect("nginx stderr");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        };
        nginx.wait_until_up();
        nginx
    }

    fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "nginx exited while starting ({status}):\n{}\n{}",
                    self.read("stderr"),
                    self.error_log()
                );
            }
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not come up:\n{}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Writes a file nginx serves at `/<name>`.
    pub fn write_file(&self, name: &str, content: &str) {
        std::fs::write(self.dir.path().join("www").join(name), content).expect("write www file");
    }

    /// The URL of `path` on this nginx.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn access_log(&self) -> String {
        self.read("access.log")
    }

    pub fn error_log(&self) -> String {
        self.read("error.log")
    }

    /// Access log lines whose request line asks for `path`.
    pub fn requests_for(&self, path: &str) -> usize {
        let wanted = format!(" {path} HTTP/");
        self.access_log()
            .lines()
            .filter(|l| l.contains(&wanted))
            .count()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
