//! A fleet on a real PostgreSQL (Debian's `postgresql`, started with initdb in a temporary
//! directory, on loopback) and its nodes, real `canopy-proxy` processes each on a data dir of
//! its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use canopy_config::control::{self, Command as ControlCommand, StatusReply};
use canopy_config::database::DatabaseUrl;

use super::{binary, free_port, installed, stderr, stdout, wait_for};

/// How long a fleet test waits for a node to do something.
pub const LIMIT: Duration = Duration::from_secs(30);

/// A PostgreSQL server of its own: initdb in a temporary directory, listening on loopback
/// (and a Unix socket in that directory), stopped when dropped. PostgreSQL refuses to run
/// as root, so as root its files are `nobody`'s and it runs as `nobody`.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    running: bool,
}

impl Postgres {
    /// `None` (said loudly) when PostgreSQL is not installed; under `CI=true` that fails.
    pub fn start() -> Option<Postgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|version| version.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists())
            .max();
        let bin = installed(
            "postgresql",
            &[bin
                .as_deref()
                .and_then(Path::to_str)
                .unwrap_or("/nonexistent")],
        )?;
        let dir = tempfile::tempdir().expect("temp dir");
        if nix::unistd::geteuid().is_root() {
            let nobody = nix::unistd::User::from_name("nobody")
                .expect("users")
                .expect("a user nobody");
            nix::unistd::chown(dir.path(), Some(nobody.uid), Some(nobody.gid)).expect("chown");
        }
        let mut postgres = Postgres {
            bin,
            port: free_port(),
            running: false,
            dir,
        };
        let data = postgres.data();
        postgres.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "canopy",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        postgres.up();
        Some(postgres)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs one of PostgreSQL's programs, as `nobody` when this is root.
    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let output = if nix::unistd::geteuid().is_root() {
            Command::new("runuser")
                .args(["-u", "nobody", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        }
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        assert!(
            output.status.success(),
            "{} {args:?}: {}{}",
            program.display(),
            stdout(&output),
            stderr(&output)
        );
    }

    pub fn up(&mut self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        self.running = true;
    }

    pub fn down(&mut self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
        self.running = false;
    }

    pub fn url(&self) -> DatabaseUrl {
        DatabaseUrl::Postgres(format!(
            "postgres://canopy@127.0.0.1:{}/postgres",
            self.port
        ))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            self.down();
        }
    }
}

/// One node: `canopy-proxy` on a data dir of its own and the fleet's database.
pub struct Node {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub url: DatabaseUrl,
    child: Child,
}

impl Node {
    pub async fn start(name: &str, url: &DatabaseUrl) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = spawn_node(dir.path(), name, url);
        let node = Node {
            name: name.to_owned(),
            dir,
            url: url.clone(),
            child,
        };
        node.wait_until_up().await;
        node
    }

    pub async fn wait_until_up(&self) {
        wait_for(&format!("{} to answer", self.name), LIMIT, || async {
            self.status().await.is_some()
        })
        .await;
    }

    pub async fn status(&self) -> Option<StatusReply> {
        let socket = self.dir.path().join("canopy.sock");
        control::call_typed(&socket, ControlCommand::Status)
            .await
            .ok()
    }

    pub async fn in_force(&self) -> i64 {
        self.status().await.map_or(0, |s| s.config_version)
    }

    pub async fn wait_for_version(&self, version: i64) {
        wait_for(
            &format!("{} to apply version {version}: {}", self.name, self.log()),
            LIMIT,
            || async { self.in_force().await == version },
        )
        .await;
    }

    pub async fn restart(&mut self) {
        self.kill();
        self.child = spawn_node(self.dir.path(), &self.name, &self.url);
        self.wait_until_up().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn spawn_node(dir: &Path, name: &str, url: &DatabaseUrl) -> Child {
    let log = std::fs::File::create(dir.join("proxy.log")).expect("log");
    Command::new(binary("canopy-proxy"))
        .arg("--db")
        .arg(dir.join("canopy.db"))
        .arg("--control")
        .arg(dir.join("canopy.sock"))
        .arg("--database")
        .arg(url.as_arg())
        .arg("--node")
        .arg(name)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start canopy-proxy")
}
