//! `canopy`: starts the proxy and the console, and manages a running Canopy from the shell.

mod supervisor;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;
use tokio::process::{Child, Command as Process};
use tokio::signal::unix::{signal, SignalKind};

use canopy_proxy::config::{
    Config, ConfigErrors, Flag, ImportError, ParentRule, Peer, PeerKind, SETTINGS,
};
use canopy_proxy::control::{self, Command, ControlError, ReloadReply, ReopenReply, StatusReply};
use canopy_proxy::hierarchy::{parent_config, peer_import};
use canopy_proxy::stats::{PeerSnapshot, PeerState, StatsSnapshot};
use canopy_proxy::versions::{ConfigVersion, Db, VersionError};
use supervisor::{describe_exit, Supervised};

#[derive(Parser)]
#[command(
    version,
    about = "Canopy: a caching proxy for cache hierarchies, with a web console"
)]
struct Cli {
    /// Where Canopy keeps its database, control socket and logs.
    #[arg(long, global = true, default_value = "./canopy-data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Option<Action>,
}

#[derive(Subcommand)]
enum Action {
    /// Start the proxy and the console (the default), and start again either one that dies.
    /// SIGHUP reopens the access log; SIGTERM or Ctrl-C stops both.
    Run,
    /// Show or change settings; every change is a new config version.
    #[command(subcommand)]
    Config(ConfigAction),
    /// Apply the newest config version to the running proxy.
    Reload,
    /// Show whether the proxy runs, and on which config version.
    Status,
    /// Show the proxy's counters.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Routing rules, as in Traffic Server's parent.config: the first that matches decides.
    #[command(subcommand)]
    Rule(RuleAction),
    /// Take an HTTP parent down by hand, or bring it back up.
    #[command(subcommand)]
    Parent(ParentAction),
    /// Show or change the neighbour caches (ICP peers); every change is a new config version.
    #[command(subcommand)]
    Peer(PeerAction),
    /// Manage the console's accounts.
    #[command(subcommand)]
    Admin(AdminAction),
    /// The proxy's access log.
    #[command(subcommand)]
    Logs(LogsAction),
}

#[derive(Subcommand)]
enum LogsAction {
    /// Reopen the access log, after it was renamed away (as logrotate does); SIGHUP to
    /// canopy-proxy or `canopy run` does the same.
    Reopen,
}

#[derive(Subcommand)]
enum AdminAction {
    /// Set (or create the account with) USER's console password, read from stdin.
    SetPassword { user: String },
}

#[derive(Subcommand)]
enum RuleAction {
    /// Every rule, numbered, as parent.config lines.
    List,
    /// Add a rule (at the end, or at --position).
    Add(Box<RuleArgs>),
    /// Remove rule number N.
    Remove { number: usize },
    /// Replace every rule with those of a Traffic Server parent.config file.
    Import { file: PathBuf },
}

#[derive(clap::Args)]
struct RuleArgs {
    /// The domain and its subdomains ("." for every host).
    #[arg(long)]
    dest_domain: Option<String>,
    #[arg(long)]
    dest_host: Option<String>,
    /// An address or CIDR network.
    #[arg(long)]
    dest_ip: Option<String>,
    #[arg(long)]
    url_regex: Option<String>,
    #[arg(long)]
    scheme: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    #[arg(long)]
    method: Option<String>,
    /// Parents in the seeds' form, `host:port; host:port|weight;`.
    #[arg(long, default_value = "")]
    parents: String,
    /// false, true (by client), strict or consistent_hash.
    #[arg(long, default_value = "false")]
    round_robin: String,
    /// Whether the origin may be tried when every parent has failed.
    #[arg(long, default_value = "true")]
    go_direct: String,
    /// Where the rule goes (1 = first); the end by default.
    #[arg(long)]
    position: Option<usize>,
}

#[derive(Subcommand)]
enum ParentAction {
    /// Stop sending requests to the parent `host:port` until `canopy parent up`.
    Down {
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    Up {
        name: String,
    },
}

#[derive(Subcommand)]
enum PeerAction {
    /// Add a parent or sibling cache.
    Add {
        name: String,
        host: String,
        #[arg(long = "type", value_parser = parse_kind)]
        kind: PeerKind,
        #[arg(long, default_value_t = 3128)]
        http_port: u16,
        #[arg(long, default_value_t = 3130)]
        icp_port: u16,
        /// Do not store what is fetched through it.
        #[arg(long)]
        proxy_only: bool,
        /// Never send it ICP queries.
        #[arg(long)]
        no_query: bool,
        /// It answers queries sent to the multicast group.
        #[arg(long)]
        multicast_responder: bool,
        /// A sibling that may fetch misses through this proxy.
        #[arg(long)]
        allow_miss: bool,
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Every peer, one a line.
    List,
    Remove {
        name: String,
    },
    /// Add the peers in a file of Squid `cache_peer` lines or Traffic Server `icp.config`
    /// lines; if any line cannot be mapped, nothing is imported.
    Import {
        file: PathBuf,
    },
}

fn parse_kind(text: &str) -> Result<PeerKind, String> {
    text.parse()
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Every setting with its value.
    List,
    Get {
        key: String,
    },
    Set {
        key: String,
        value: String,
    },
    /// The whole config as TOML.
    Export,
    /// Lay a TOML file (as `export` writes it) over the config: settings it leaves out keep
    /// their values, and peers and rules are replaced only when the file holds them.
    Import {
        file: PathBuf,
        /// Replace the whole config: what the file leaves out takes its default.
        #[arg(long)]
        replace: bool,
        /// Print what would change, and save nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// A failure the user caused or can fix: printed plainly, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UserError(String);

struct Paths {
    data_dir: PathBuf,
    db: PathBuf,
    control: PathBuf,
}

impl Paths {
    fn new(data_dir: &Path) -> Paths {
        Paths {
            data_dir: data_dir.to_owned(),
            db: data_dir.join("canopy.db"),
            control: data_dir.join("canopy.sock"),
        }
    }

    /// Opens the database, creating the data dir (mode 0700) when missing.
    async fn open_db(&self) -> anyhow::Result<Db> {
        Db::open(&self.db)
            .await
            .with_context(|| format!("opening {}", self.db.display()))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Warnings only (such as files tightened at start): the commands' output is their own.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let paths = Paths::new(&cli.data_dir);
    let result = match cli.command.unwrap_or(Action::Run) {
        Action::Run => run(&paths).await,
        Action::Config(action) => config(&paths, action).await,
        Action::Reload => reload(&paths).await,
        Action::Status => status(&paths).await,
        Action::Stats { json } => stats(&paths, json).await,
        Action::Rule(action) => rule(&paths, action).await,
        Action::Parent(action) => parent(&paths, action).await,
        Action::Peer(action) => peer(&paths, action).await,
        Action::Admin(AdminAction::SetPassword { user }) => set_password(&paths, &user).await,
        Action::Logs(LogsAction::Reopen) => reopen_logs(&paths).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(user) = e.downcast_ref::<UserError>() {
                eprintln!("canopy: {user}");
                ExitCode::from(2)
            } else {
                eprintln!("canopy: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

fn refused(errors: ConfigErrors) -> anyhow::Error {
    let lines: Vec<String> = errors
        .0
        .iter()
        .map(|e| {
            if e.value.is_empty() {
                format!("{}: {}", e.key, e.message)
            } else {
                format!("{} = {:?}: {}", e.key, e.value, e.message)
            }
        })
        .collect();
    UserError(format!("{}; nothing was changed", lines.join("\n"))).into()
}

fn author() -> String {
    format!(
        "{} (canopy command)",
        std::env::var("USER").unwrap_or_else(|_| "admin".to_owned())
    )
}

async fn config(paths: &Paths, action: ConfigAction) -> anyhow::Result<ExitCode> {
    let db = paths.open_db().await?;
    let latest = db.in_force().await?;
    let mut config = latest.config.clone();
    match action {
        ConfigAction::List => {
            for setting in SETTINGS {
                println!("{} = {}", setting.key, config.get(setting.key)?);
            }
            println!(
                "# config version {}; {} peers",
                latest.id,
                config.peers.len()
            );
            print_rejected_after(&db, latest.id).await?;
            return Ok(ExitCode::SUCCESS);
        }
        ConfigAction::Get { key } => {
            let value = config
                .get(&key)
                .map_err(|e| UserError(format!("{key}: {}", e.message)))?;
            println!("{value}");
            return Ok(ExitCode::SUCCESS);
        }
        ConfigAction::Export => {
            print!("{}", config.to_toml());
            return Ok(ExitCode::SUCCESS);
        }
        ConfigAction::Set { key, value } => config.set(&key, &value).map_err(refused)?,
        ConfigAction::Import {
            file,
            replace,
            dry_run,
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| UserError(format!("cannot read {}: {e}", file.display())))?;
            let imported = if replace {
                Config::from_toml(&text)
            } else {
                config.merged_toml(&text)
            };
            config = imported.map_err(|e| match e {
                ImportError::Unreadable(fault) => {
                    UserError(format!("{}: {fault}; nothing was changed", file.display())).into()
                }
                ImportError::Invalid(errors) => refused(errors),
            })?;
            if dry_run {
                let changes = config.diff(&latest.config);
                if changes.is_empty() {
                    println!("no change: config version {} already says so", latest.id);
                }
                for change in changes {
                    println!("{change}");
                }
                println!("dry run: nothing was saved");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    save(&db, &latest, &config).await
}

/// Under a listing: a newer version the proxy rejected, so its values are not taken for
/// those in force.
async fn print_rejected_after(db: &Db, in_force: i64) -> anyhow::Result<()> {
    if let Some(rejected) = db.rejected_after(in_force).await? {
        println!(
            "# version {} was rejected: {}; showing version {in_force} in force",
            rejected.id,
            rejected.state_reason.as_deref().unwrap_or("no reason kept"),
        );
    }
    Ok(())
}

/// Saves `config` as a new version based on `latest`, and says what changed.
async fn save(db: &Db, latest: &ConfigVersion, config: &Config) -> anyhow::Result<ExitCode> {
    if *config == latest.config {
        println!("no change: config version {} already says so", latest.id);
        return Ok(ExitCode::SUCCESS);
    }
    let id = match db.save_change(config, &author(), Some(latest.id)).await {
        Ok(id) => id,
        Err(VersionError::Invalid(errors)) => return Err(refused(errors)),
        Err(e) => return Err(e.into()),
    };
    let saved = db.get(id).await?;
    println!("config version {id} saved: {}", saved.summary);
    println!("run `canopy reload` to apply it to a running proxy");
    Ok(ExitCode::SUCCESS)
}

async fn rule(paths: &Paths, action: RuleAction) -> anyhow::Result<ExitCode> {
    let db = paths.open_db().await?;
    let latest = db.in_force().await?;
    let mut config = latest.config.clone();
    match action {
        RuleAction::List => {
            for (i, rule) in config.parent_rules.iter().enumerate() {
                println!("{:>3}  {}", i + 1, parent_config::line(rule));
            }
            println!(
                "default  parent=\"{}\" round_robin={} (every other request)",
                config.parents, config.round_robin
            );
            return Ok(ExitCode::SUCCESS);
        }
        RuleAction::Add(args) => {
            let args = *args;
            let bad =
                |field: &str, e: String| UserError(format!("{field}: {e}; nothing was changed"));
            let rule = ParentRule {
                dest_domain: args.dest_domain,
                dest_host: args.dest_host,
                dest_ip: args.dest_ip,
                url_regex: args.url_regex,
                scheme: args.scheme,
                port: args.port,
                method: args.method,
                parents: args.parents.parse().map_err(|e| bad("--parents", e))?,
                round_robin: args
                    .round_robin
                    .parse()
                    .map_err(|e| bad("--round-robin", e))?,
                go_direct: args
                    .go_direct
                    .parse::<Flag>()
                    .map_err(|e| bad("--go-direct", e))?
                    .0,
            };
            let position = args.position.unwrap_or(config.parent_rules.len() + 1);
            if position == 0 || position > config.parent_rules.len() + 1 {
                return Err(bad(
                    "--position",
                    format!("expected 1 to {}", config.parent_rules.len() + 1),
                )
                .into());
            }
            config.parent_rules.insert(position - 1, rule);
        }
        RuleAction::Remove { number } => {
            if number == 0 || number > config.parent_rules.len() {
                return Err(UserError(format!(
                    "there is no rule {number}; `canopy rule list` shows {} rules",
                    config.parent_rules.len()
                ))
                .into());
            }
            config.parent_rules.remove(number - 1);
        }
        RuleAction::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| UserError(format!("cannot read {}: {e}", file.display())))?;
            config.parent_rules = parent_config::parse(&text).map_err(|problems| {
                UserError(format!(
                    "{} cannot be imported:\n{}\nnothing was changed",
                    file.display(),
                    problems.join("\n")
                ))
            })?;
        }
    }
    config.validate().map_err(refused)?;
    save(&db, &latest, &config).await
}

async fn parent(paths: &Paths, action: ParentAction) -> anyhow::Result<ExitCode> {
    let command = match action {
        ParentAction::Down { name, reason } => Command::Parent {
            name,
            down: true,
            reason,
        },
        ParentAction::Up { name } => Command::Parent {
            name,
            down: false,
            reason: None,
        },
    };
    match control::call_typed::<PeerSnapshot>(&paths.control, command).await {
        Ok(peer) if peer.health.down => {
            println!(
                "parent {} is down: {}",
                peer.name,
                peer.health.down_reason.unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(peer) => {
            println!("parent {} is up", peer.name);
            Ok(ExitCode::SUCCESS)
        }
        Err(ControlError::Refused(reason)) => Err(UserError(reason).into()),
        Err(e) => Err(not_running(e)),
    }
}

async fn peer(paths: &Paths, action: PeerAction) -> anyhow::Result<ExitCode> {
    let db = paths.open_db().await?;
    let latest = db.in_force().await?;
    let mut config = latest.config.clone();
    match action {
        PeerAction::List => {
            for p in &config.peers {
                let options: Vec<&str> = [
                    (p.proxy_only, "proxy-only"),
                    (p.no_query, "no-query"),
                    (p.multicast_responder, "multicast-responder"),
                    (p.allow_miss, "allow-miss"),
                ]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
                println!(
                    "{} {} {} http {} icp {} weight {}{}{}",
                    p.name,
                    p.kind,
                    p.host,
                    p.http_port,
                    p.icp_port,
                    p.weight,
                    if options.is_empty() { "" } else { " " },
                    options.join(" ")
                );
            }
            println!(
                "# config version {}; {} peers",
                latest.id,
                config.peers.len()
            );
            print_rejected_after(&db, latest.id).await?;
            return Ok(ExitCode::SUCCESS);
        }
        PeerAction::Add {
            name,
            host,
            kind,
            http_port,
            icp_port,
            proxy_only,
            no_query,
            multicast_responder,
            allow_miss,
            weight,
        } => config.peers.push(Peer {
            name,
            host,
            kind,
            http_port,
            icp_port,
            proxy_only,
            no_query,
            multicast_responder,
            allow_miss,
            weight,
        }),
        PeerAction::Remove { name } => {
            let before = config.peers.len();
            config.peers.retain(|p| p.name != name);
            if config.peers.len() == before {
                return Err(UserError(format!(
                    "no peer is called {name:?}; see `canopy peer list`"
                ))
                .into());
            }
        }
        PeerAction::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| UserError(format!("cannot read {}: {e}", file.display())))?;
            let peers = peer_import::parse(&text, config.icp_multicast_group).map_err(|lines| {
                let report: Vec<String> = lines
                    .iter()
                    .map(|u| format!("{}:{}: {}", file.display(), u.line, u.reason))
                    .collect();
                UserError(format!("{}\nnothing was imported", report.join("\n")))
            })?;
            config.peers.extend(peers);
        }
    }
    config.validate().map_err(refused)?;
    save(&db, &latest, &config).await
}

fn not_running(e: ControlError) -> anyhow::Error {
    match e {
        ControlError::NotRunning(path) => UserError(format!(
            "the proxy is not running (nothing listens on {}); start it with `canopy run`",
            path.display()
        ))
        .into(),
        other => other.into(),
    }
}

async fn reload(paths: &Paths) -> anyhow::Result<ExitCode> {
    match control::call_typed::<ReloadReply>(&paths.control, Command::Reload).await {
        Ok(reply) if reply.changed => {
            println!(
                "config version {} applied in {} ms",
                reply.config_version, reply.elapsed_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(reply) => {
            println!(
                "config version {} is already in force",
                reply.config_version
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ControlError::Refused(reason)) => {
            eprintln!("canopy: reload refused: {reason}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(not_running(e)),
    }
}

async fn reopen_logs(paths: &Paths) -> anyhow::Result<ExitCode> {
    match control::call_typed::<ReopenReply>(&paths.control, Command::Reopen).await {
        Ok(ReopenReply {
            access_log: Some(path),
        }) => println!("access log {path} reopened"),
        Ok(ReopenReply { access_log: None }) => {
            println!("the access log is off (access_log is empty); nothing to reopen")
        }
        Err(ControlError::Refused(reason)) => return Err(UserError(reason).into()),
        Err(e) => return Err(not_running(e)),
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(paths: &Paths) -> anyhow::Result<ExitCode> {
    let supervisor = canopy_proxy::supervision::State::read(&paths.data_dir);
    if let Some(supervisor) = &supervisor {
        println!("canopy run (pid {}) supervises:", supervisor.pid);
        for process in &supervisor.processes {
            println!("  {process}");
        }
    }
    let status: StatusReply = match control::call_typed(&paths.control, Command::Status).await {
        Ok(status) => status,
        Err(ControlError::NotRunning(_)) if supervisor.is_some() => {
            return Err(UserError(
                "the proxy is not answering now; canopy run starts it again".to_owned(),
            )
            .into())
        }
        Err(e) => return Err(not_running_because(paths, e).await),
    };
    println!(
        "proxy running: pid {}, up {} s",
        status.pid, status.uptime_s
    );
    println!("config version in force: {}", status.config_version);
    if let Some(rejected) = &status.rejected_version {
        println!(
            "config version {} was rejected: {}",
            rejected.id, rejected.reason
        );
    }
    println!("listening on {}", status.http_listen);
    if let Some(icp) = &status.icp_listen {
        println!("ICP on {icp}");
    }
    Ok(ExitCode::SUCCESS)
}

/// [`not_running`], with the version the proxy last refused to start on, when there is one.
async fn not_running_because(paths: &Paths, e: ControlError) -> anyhow::Error {
    let refused = match paths.open_db().await {
        Ok(db) => match db.in_force().await {
            Ok(in_force) => db.rejected_after(in_force.id - 1).await.ok().flatten(),
            Err(_) => None,
        },
        Err(_) => None,
    };
    match refused {
        Some(v) => UserError(format!(
            "{}\nconfig version {} was rejected: {}",
            not_running(e),
            v.id,
            v.state_reason.as_deref().unwrap_or("no reason kept")
        ))
        .into(),
        None => not_running(e),
    }
}

/// Reads the password from stdin (one line, or all of it without the final newline), so
/// scripts and tests can set it without a terminal.
async fn set_password(paths: &Paths, user: &str) -> anyhow::Result<ExitCode> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .context("reading the password from stdin")?;
    let password = input.strip_suffix('\n').unwrap_or(&input);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(UserError("no password on stdin; nothing was changed".to_owned()).into());
    }
    let db = paths.open_db().await?;
    canopy_manager::accounts::set_password(&db, user, password)
        .await
        .map_err(|e| UserError(format!("{e}; nothing was changed")))?;
    println!("Password of {user} set; their other sessions were logged out.");
    Ok(ExitCode::SUCCESS)
}

async fn stats(paths: &Paths, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let reply = control::call(&paths.control, Command::Stats)
            .await
            .map_err(not_running)?;
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s: StatsSnapshot = control::call_typed(&paths.control, Command::Stats)
        .await
        .map_err(not_running)?;
    println!("requests          {}", s.requests);
    println!("hits (fresh)      {}", s.hits_fresh);
    println!("hits (stale)      {}", s.hits_stale);
    println!("hits (revalidated) {}", s.hits_revalidated);
    println!("misses            {}", s.misses);
    println!("uncacheable       {}", s.uncacheable);
    println!("hit ratio         {:.1} %", s.hit_ratio * 100.0);
    println!("byte hit ratio    {:.1} %", s.byte_hit_ratio * 100.0);
    println!("bytes from cache  {}", s.bytes_from_cache);
    println!("bytes upstream    {}", s.bytes_from_upstream);
    println!("objects held      {} ({} bytes)", s.objects, s.bytes_held);
    println!("denied clients    {}", s.denied_clients);
    println!("denied destinations {}", s.denied_destinations);
    println!("retries           {}", s.retries);
    let timeouts: Vec<String> = s
        .timeouts
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    println!("timeouts          {}", timeouts.join(", "));
    let answers: Vec<String> = s
        .icp_answers
        .iter()
        .map(|(opcode, n)| format!("{opcode} {n}"))
        .collect();
    println!(
        "ICP queries in    {} (answered {}; dropped {}; replies ignored {})",
        s.icp_queries_received,
        answers.join(", "),
        s.icp_dropped,
        s.icp_replies_ignored
    );
    for peer in &s.peers {
        println!(
            "peer {:<26} {} fetches {} failures {} bytes {}{}",
            peer.name,
            if peer.health.down { "DOWN" } else { "up" },
            peer.fetches,
            peer.failures,
            peer.bytes,
            peer.last_failure
                .as_ref()
                .map(|f| format!(" (last failure {}: {})", f.at, f.reason))
                .unwrap_or_default()
        );
        if let Some(state) = peer.state {
            let replies: Vec<String> = peer
                .icp_replies
                .iter()
                .map(|(opcode, n)| format!("{opcode} {n}"))
                .collect();
            println!(
                "  ICP {} since {}: queries {}, replies {}, timeouts {}, late {}, avg {:.1} ms; hits served {}, false hits {}",
                if state == PeerState::Dead { "dead" } else { "up" },
                peer.state_since.as_deref().unwrap_or("-"),
                peer.icp_queries,
                replies.join(", "),
                peer.icp_timeouts,
                peer.icp_late_replies,
                peer.icp_reply_ms_avg,
                peer.hits_served,
                peer.false_hits
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The binaries `run` starts: beside this one (as cargo builds them), or on the PATH.
fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn spawn(name: &str, paths: &Paths) -> anyhow::Result<Child> {
    let mut process = Process::new(sibling_binary(name));
    // Safety: prctl is async-signal-safe, and nothing else runs in the child before exec.
    // A child is told to stop (SIGTERM) if `canopy run` dies, even by SIGKILL, so that no
    // proxy is left holding the port without a supervisor. (The signal follows the thread
    // that started the child: a runtime worker, which lives as long as `canopy run`.)
    unsafe {
        process.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    process
        .arg("--db")
        .arg(&paths.db)
        .arg("--control")
        .arg(&paths.control)
        // A group of its own: Ctrl-C and a terminal's hangup reach `canopy run` alone, which
        // stops or signals each child itself.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name} (build it with `cargo build --release`)"))
}

async fn run(paths: &Paths) -> anyhow::Result<ExitCode> {
    // Taken over before any child starts: a SIGTERM that came while starting would
    // otherwise end this process and leave the children running.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let db = paths.open_db().await?;
    let version = db.latest().await?;
    if let Some(password) = canopy_manager::accounts::ensure_admin(&db).await? {
        // Printed at once, so it is not lost if the proxy then fails to start.
        println!("Console account created: admin, password {password} (shown only now;");
        println!("  change it with `canopy admin set-password admin`).");
    }
    drop(db);
    let mut proxy = spawn("canopy-proxy", paths)?;
    let status = match wait_until_up(paths, &mut proxy).await {
        Ok(status) => status,
        Err(e) => {
            let _ = proxy.start_kill();
            return Err(e);
        }
    };
    let manager = spawn("canopy-manager", paths)?;
    let listen = status.http_listen.replace("0.0.0.0", "127.0.0.1");
    println!(
        "Canopy {} is running (config version {}).",
        env!("CARGO_PKG_VERSION"),
        status.config_version
    );
    if status.config_version != version.id {
        println!(
            "  Note: config version {} was rejected; see `canopy status`.",
            version.id
        );
    }
    println!("  Proxy:   {listen}   try: curl -x http://{listen} http://example.com/");
    // The console listens where the version in force says, as the proxy runs it.
    let in_force = paths.open_db().await?.in_force().await?;
    println!("  Console: http://{}/", in_force.config.manager_listen);
    println!("  Data:    {}", paths.data_dir.display());
    println!("Press Ctrl-C to stop.");
    let mut proxy = Supervised::new("canopy-proxy", proxy);
    let mut manager = Supervised::new("canopy-manager", manager);
    supervisor::record(&paths.data_dir, &[&proxy, &manager]);
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => proxy.signal(Signal::SIGHUP),
            event = proxy.next() => proxy.handle(event, || spawn("canopy-proxy", paths)),
            event = manager.next() => manager.handle(event, || spawn("canopy-manager", paths)),
        }
        supervisor::record(&paths.data_dir, &[&proxy, &manager]);
    }
    tokio::join!(proxy.stop(STOP_GRACE), manager.stop(STOP_GRACE));
    supervisor::forget(&paths.data_dir);
    // Whoever started us may have closed our stdout by now; that is no failure.
    let _ = writeln!(std::io::stdout(), "Canopy stopped.");
    Ok(ExitCode::SUCCESS)
}

/// How long a child has to stop after SIGTERM before it is killed: longer than the proxy
/// lets the requests it is serving take to finish (10 s).
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Waits for the proxy's control socket to answer, or for the proxy to die trying.
async fn wait_until_up(paths: &Paths, proxy: &mut Child) -> anyhow::Result<StatusReply> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(exited) = proxy.try_wait()? {
            anyhow::bail!("canopy-proxy {} while starting", describe_exit(exited));
        }
        match control::call_typed::<StatusReply>(&paths.control, Command::Status).await {
            Ok(status) => return Ok(status),
            Err(e) if Instant::now() > deadline => {
                anyhow::bail!("canopy-proxy did not answer on its control socket: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
