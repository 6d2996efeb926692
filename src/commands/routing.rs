//! `canopy rule`, `canopy parent` and `canopy peer`: routing rules, parents and ICP peers.

use std::process::ExitCode;

use canopy_config::config::{Config, Flag, ParentRule};
use canopy_config::control::{self, Command, ControlError};
use canopy_config::import::{parent_config, peer_import, ImportError};
use canopy_config::maintenance::Maintenance;
use canopy_config::stats::{HealthSnapshot, PeerSnapshot};

use super::{author, not_running, print_listing_footer, refused, save, Paths, UserError};
use crate::cli::{ParentAction, PeerAction, RuleAction};

pub(crate) async fn rule(paths: &Paths, action: RuleAction) -> anyhow::Result<ExitCode> {
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
            let import = parent_config::parse(&text).map_err(|problems| {
                UserError(format!(
                    "{} cannot be imported:\n{}\nnothing was changed",
                    file.display(),
                    problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                ))
            })?;
            for ignored in &import.ignored {
                println!("{}:{}: {}", file.display(), ignored.line, ignored.message);
            }
            println!(
                "{} rules read, {} lines or options ignored",
                import.rules.len(),
                import.ignored.len()
            );
            config.parent_rules = import.into_rules();
        }
    }
    config.validate().map_err(refused)?;
    save(&db, &latest, &config).await
}

pub(crate) async fn parent(paths: &Paths, action: ParentAction) -> anyhow::Result<ExitCode> {
    match action {
        ParentAction::Down { name, reason } => set_peer(paths, "parent", name, Some(reason)).await,
        ParentAction::Up { name } => set_peer(paths, "parent", name, None).await,
    }
}

/// Asks the running proxy to take `name` down (`Some(reason)`) or bring it up (`None`), and
/// says how it stands; `noun` is the command's word for it.
async fn set_peer(
    paths: &Paths,
    noun: &str,
    name: String,
    down: Option<Option<String>>,
) -> anyhow::Result<ExitCode> {
    let command = Command::Peer {
        name,
        down: down.is_some(),
        reason: down.flatten(),
        by: Some(author()),
    };
    match control::call_typed::<PeerSnapshot>(&paths.control, command).await {
        Ok(peer) if peer.health.down => {
            println!("{noun} {} is {}", peer.name, down_text(&peer.health));
            Ok(ExitCode::SUCCESS)
        }
        Ok(peer) => {
            println!("{noun} {} is up", peer.name);
            Ok(ExitCode::SUCCESS)
        }
        Err(ControlError::Refused(reason)) => Err(UserError(reason).into()),
        Err(e) => Err(not_running(e)),
    }
}

/// "down: REASON (by WHO since WHEN)", as the CLI shows a peer that is down.
pub(crate) fn down_text(health: &HealthSnapshot) -> String {
    let since = health.down_since.as_deref().unwrap_or("-");
    let reason = health.down_reason.as_deref().unwrap_or("no reason kept");
    match &health.down_by {
        Some(by) => format!("down: {reason} (by {by} since {since})"),
        None => format!("down: {reason} (since {since})"),
    }
}

fn maintenance_text(record: Option<&Maintenance>) -> String {
    record
        .map(|m| format!(" down: {} (by {} since {})", m.reason, m.by, m.at))
        .unwrap_or_default()
}

pub(crate) async fn peer(paths: &Paths, action: PeerAction) -> anyhow::Result<ExitCode> {
    let db = paths.open_db().await?;
    let latest = db.in_force().await?;
    let mut config = latest.config.clone();
    match action {
        PeerAction::List => {
            let records = db.maintenance().await?;
            let record = |name: &str| records.iter().find(|m| m.name == name);
            for p in &config.peers {
                let mut options: Vec<String> = [
                    (p.proxy_only, "proxy-only"),
                    (p.no_query, "no-query"),
                    (p.multicast_responder, "multicast-responder"),
                    (p.allow_miss, "allow-miss"),
                    (p.deny_misses, "deny-misses"),
                    (p.default_parent, "default"),
                    (p.round_robin, "round-robin"),
                    (p.no_digest, "no-digest"),
                ]
                .into_iter()
                .filter(|(on, _)| *on)
                .map(|(_, name)| name.to_owned())
                .collect();
                options.extend(
                    p.connect_timeout_ms
                        .map(|ms| format!("connect-timeout-ms={ms}")),
                );
                options.extend(p.max_conn.map(|n| format!("max-conn={n}")));
                options.extend((!p.htcp.is_off()).then(|| format!("htcp={}", p.htcp)));
                options.extend(
                    [
                        (p.no_clr, "no-clr"),
                        (p.only_clr, "only-clr"),
                        (p.no_purge_clr, "no-purge-clr"),
                        (p.forward_clr, "forward-clr"),
                    ]
                    .into_iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, name)| name.to_owned()),
                );
                println!(
                    "{} {} {} http {} icp {} weight {}{}{}{}",
                    p.name,
                    p.kind,
                    p.host,
                    p.http_port,
                    p.icp_port,
                    p.weight,
                    if options.is_empty() { "" } else { " " },
                    options.join(" "),
                    maintenance_text(record(&p.name))
                );
            }
            for parent in http_parents(&config) {
                println!("{parent} HTTP parent{}", maintenance_text(record(&parent)));
            }
            print_listing_footer(&db, &latest).await?;
            return Ok(ExitCode::SUCCESS);
        }
        PeerAction::Add(peer) => config.peers.push(peer.into()),
        PeerAction::Down { name, reason } => {
            return set_peer(paths, "peer", name, Some(reason)).await
        }
        PeerAction::Up { name } => return set_peer(paths, "peer", name, None).await,
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
            let at = |fault: &ImportError| {
                format!("{}:{}: {}", file.display(), fault.line, fault.message)
            };
            let import =
                peer_import::parse(&text, config.icp_multicast_group).map_err(|lines| {
                    let report: Vec<String> = lines.iter().map(at).collect();
                    UserError(format!("{}\nnothing was imported", report.join("\n")))
                })?;
            for ignored in &import.ignored {
                println!("{}", at(ignored));
            }
            println!(
                "{} peers read, {} lines or options ignored",
                import.peers.len(),
                import.ignored.len()
            );
            config.peers.extend(import.peers);
        }
    }
    config.validate().map_err(refused)?;
    save(&db, &latest, &config).await
}

/// Every HTTP parent the default list and the rules name, once each, in that order.
fn http_parents(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let lists =
        std::iter::once(&config.parents).chain(config.parent_rules.iter().map(|r| &r.parents));
    for entry in lists.flat_map(|list| &list.0) {
        let name = entry.addr.to_string();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}
