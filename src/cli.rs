//! The `canopy` command line: every command, its arguments and its help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use canopy_config::config::{HtcpPeer, Peer, PeerKind};
use canopy_config::database::DatabaseUrl;
use canopy_manager::accounts::{AccountError, Role};

#[derive(Parser)]
#[command(
    version,
    about = "Canopy: a caching proxy for cache hierarchies, with a web console"
)]
pub(crate) struct Cli {
    /// Where Canopy keeps its database, control socket and logs.
    #[arg(long, global = true, default_value = "./canopy-data")]
    pub(crate) data_dir: PathBuf,
    /// The config database a fleet of nodes shares (postgres://USER@HOST/DATABASE); without
    /// it, canopy.db in the data dir.
    #[arg(long, global = true, env = "CANOPY_DATABASE")]
    pub(crate) database: Option<DatabaseUrl>,
    /// This node's name among the nodes of a fleet (default: the host name).
    #[arg(long, global = true, env = "CANOPY_NODE")]
    pub(crate) node: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Option<Action>,
}

#[derive(Subcommand)]
pub(crate) enum Action {
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
        /// Per client (peer or child cache): ICP queries and answers by opcode, objects and
        /// bytes served.
        #[arg(long)]
        clients: bool,
    },
    /// Routing rules, as in Traffic Server's parent.config: the first that matches decides.
    #[command(subcommand)]
    Rule(RuleAction),
    /// Take a parent down by hand, or bring it back up (the same as `canopy peer down|up`).
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
    /// The nodes on this database (every node of a fleet on --database), and the settings
    /// one node holds apart from the fleet's versions.
    #[command(subcommand)]
    Node(NodeAction),
    /// Remove every stored variant of URL from the running proxy's cache (a PURGE request
    /// sent to its listener from this host, which purge_allowed_clients must allow).
    Purge { url: String },
    /// What the running proxy's cache holds, in memory and on disk.
    #[command(subcommand)]
    Cache(CacheAction),
}

#[derive(Subcommand)]
pub(crate) enum CacheAction {
    /// The URLs held that start with PREFIX (every URL without it), in URL order: tier
    /// (memory, disk or both), status, variants, body bytes, when stored, age, freshness.
    List {
        #[arg(default_value = "")]
        prefix: String,
        /// Show at most this many URLs (1 to 10000); the listing says when more match.
        #[arg(long, default_value_t = 100, value_parser = list_limit())]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Each tier: objects, bytes and bound, hits and hit ratio, evictions; the disk's reads,
    /// writes, faults and state (ok, faulted, closed or off).
    Stats {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum NodeAction {
    /// Every node: its state, the version in force, when it was last seen, and its outcome
    /// for the newest version it tried.
    List,
    /// Hold KEY = VALUE on this node (--node; by default the host name) over every version
    /// it applies: bind_address, http_port, icp_port, manager_listen or visible_name. The
    /// node applies it at once, over the version in force (`node list` says if it cannot).
    Set { key: String, value: String },
    /// Make NODE the canary: every version saved from now on (in any console, or with
    /// `canopy config`) is applied by NODE alone, until `canopy node rollout`.
    Canary { node: String },
    /// End the canary: the versions held for it go to every node.
    Rollout,
}

#[derive(Subcommand)]
pub(crate) enum LogsAction {
    /// Reopen the access log, after it was renamed away (as logrotate does); SIGHUP to
    /// canopy-proxy or `canopy run` does the same.
    Reopen,
}

#[derive(Subcommand)]
pub(crate) enum AdminAction {
    /// Every account: its role, when it was made, its last login, its failed logins since.
    List,
    /// Add an account; its password is read from stdin, or generated and printed once.
    Add {
        name: String,
        /// admin (changes anything) or monitor (sees every page, changes nothing).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long)]
        generate_password: bool,
    },
    /// Remove an account and log out its sessions (never the last administrator).
    Remove { name: String },
    /// Give an account the role admin or monitor, from its next request on.
    Role {
        name: String,
        #[arg(value_parser = parse_role)]
        role: Role,
    },
    /// Set an account's password, read from stdin or generated and printed once; its
    /// sessions are logged out.
    Password {
        name: String,
        #[arg(long)]
        generate_password: bool,
    },
    /// Set (or create the account, as an administrator, with) USER's console password, read
    /// from stdin.
    SetPassword { user: String },
}

/// `--limit` of `canopy cache list`: at least one URL, at most what one reply holds.
fn list_limit() -> clap::builder::RangedU64ValueParser<usize> {
    let most = canopy_config::control::MAX_CACHE_LIST as u64;
    clap::builder::RangedU64ValueParser::new().range(1..=most)
}

pub(crate) fn parse_role(text: &str) -> Result<Role, String> {
    text.parse().map_err(|e: AccountError| e.to_string())
}

#[derive(Subcommand)]
pub(crate) enum RuleAction {
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
pub(crate) struct RuleArgs {
    /// The domain and its subdomains ("." for every host).
    #[arg(long)]
    pub(crate) dest_domain: Option<String>,
    #[arg(long)]
    pub(crate) dest_host: Option<String>,
    /// An address or CIDR network.
    #[arg(long)]
    pub(crate) dest_ip: Option<String>,
    #[arg(long)]
    pub(crate) url_regex: Option<String>,
    #[arg(long)]
    pub(crate) scheme: Option<String>,
    #[arg(long)]
    pub(crate) port: Option<u16>,
    #[arg(long)]
    pub(crate) method: Option<String>,
    /// Parents in the seeds' form, `host:port; host:port|weight;`.
    #[arg(long, default_value = "")]
    pub(crate) parents: String,
    /// false, true (by client), strict, consistent_hash or carp.
    #[arg(long, default_value = "false")]
    pub(crate) round_robin: String,
    /// Whether the origin may be tried when every parent has failed.
    #[arg(long, default_value = "true")]
    pub(crate) go_direct: String,
    /// Where the rule goes (1 = first); the end by default.
    #[arg(long)]
    pub(crate) position: Option<usize>,
}

#[derive(Subcommand)]
pub(crate) enum ParentAction {
    /// Stop sending requests to the parent (`host:port`, or an ICP parent's name) until
    /// `canopy parent up`; kept across restarts.
    Down {
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Bring it back to normal health checking.
    Up { name: String },
}

/// A peer as `canopy peer add` takes it.
#[derive(Args)]
pub(crate) struct PeerArgs {
    pub(crate) name: String,
    pub(crate) host: String,
    #[arg(long = "type", value_parser = parse_kind)]
    pub(crate) kind: PeerKind,
    #[arg(long, default_value_t = 3128)]
    pub(crate) http_port: u16,
    #[arg(long, default_value_t = 3130)]
    pub(crate) icp_port: u16,
    /// Do not store what is fetched through it.
    #[arg(long)]
    pub(crate) proxy_only: bool,
    /// Never send it ICP queries.
    #[arg(long)]
    pub(crate) no_query: bool,
    /// It answers queries sent to the multicast group.
    #[arg(long)]
    pub(crate) multicast_responder: bool,
    /// A sibling we may send misses to: no only-if-cached on them (Squid's allow-miss).
    #[arg(long)]
    pub(crate) allow_miss: bool,
    /// Serve its own requests from the cache only, a miss 504 (Squid's miss_access deny).
    #[arg(long)]
    pub(crate) deny_misses: bool,
    #[arg(long, default_value_t = 1)]
    pub(crate) weight: u32,
    /// A parent used as the last resort for a miss (Squid's default).
    #[arg(long = "default")]
    pub(crate) default_parent: bool,
    /// A parent in the rotation for misses no ICP reply placed (Squid's round-robin).
    #[arg(long)]
    pub(crate) round_robin: bool,
    /// Wait this long for a connection to it, instead of connect_timeout_ms.
    #[arg(long)]
    pub(crate) connect_timeout_ms: Option<u64>,
    /// At most this many connections open to it, idle ones included (Squid's max-conn).
    #[arg(long)]
    pub(crate) max_conn: Option<u32>,
    /// Ask it over HTCP at --icp-port instead of ICP: on, or oldsquid (Squid's htcp options).
    #[arg(long, default_value_t = HtcpPeer::Off)]
    pub(crate) htcp: HtcpPeer,
    /// Send it no HTCP CLR (Squid's htcp=no-clr).
    #[arg(long)]
    pub(crate) no_clr: bool,
    /// Send it HTCP CLR but no queries (Squid's htcp=only-clr).
    #[arg(long)]
    pub(crate) only_clr: bool,
    /// Send it the HTCP CLRs of invalidations but not those of PURGEs (Squid's
    /// htcp=no-purge-clr).
    #[arg(long)]
    pub(crate) no_purge_clr: bool,
    /// Pass on to it the HTCP CLRs this proxy receives and obeys (Squid's htcp=forward-clr).
    #[arg(long)]
    pub(crate) forward_clr: bool,
    /// Never fetch or consult its cache digest (Squid's no-digest).
    #[arg(long)]
    pub(crate) no_digest: bool,
}

impl From<PeerArgs> for Peer {
    fn from(a: PeerArgs) -> Peer {
        Peer {
            name: a.name,
            host: a.host,
            kind: a.kind,
            http_port: a.http_port,
            icp_port: a.icp_port,
            proxy_only: a.proxy_only,
            no_query: a.no_query,
            multicast_responder: a.multicast_responder,
            allow_miss: a.allow_miss,
            deny_misses: a.deny_misses,
            weight: a.weight,
            default_parent: a.default_parent,
            round_robin: a.round_robin,
            connect_timeout_ms: a.connect_timeout_ms,
            max_conn: a.max_conn,
            htcp: a.htcp,
            no_clr: a.no_clr,
            only_clr: a.only_clr,
            no_purge_clr: a.no_purge_clr,
            forward_clr: a.forward_clr,
            no_digest: a.no_digest,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum PeerAction {
    /// Add a parent or sibling cache.
    Add(PeerArgs),
    /// Every peer, one a line, then the HTTP parents; those down by hand say by whom,
    /// since when and why.
    List,
    /// Send the peer (or HTTP parent `host:port`) no requests and no ICP queries until
    /// `canopy peer up`; kept across restarts, as Traffic Server's `traffic_ctl host down`.
    Down {
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Bring it back to normal health checking.
    Up {
        name: String,
    },
    Remove {
        name: String,
    },
    /// Add the peers in a file of Squid `cache_peer` lines or Traffic Server `icp.config`
    /// lines; if any line cannot be mapped, nothing is imported.
    Import {
        file: PathBuf,
    },
}

pub(crate) fn parse_kind(text: &str) -> Result<PeerKind, String> {
    text.parse()
}

#[derive(Subcommand)]
pub(crate) enum ConfigAction {
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
    /// The newest config versions: who saved each, when, what it changed, what the proxy
    /// did with it.
    History {
        /// How many versions to show.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// What changed from version FROM to version TO.
    Diff {
        from: i64,
        to: i64,
    },
    /// Save version N again as the newest version and apply it, as the console's Restore.
    Restore {
        version: i64,
    },
}
