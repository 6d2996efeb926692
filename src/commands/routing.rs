//! `canopy rule`, `canopy parent` and `canopy peer`: routing rules, parents and ICP peers.

use std::process::ExitCode;

use canopy_config::config::{Flag, ParentRule, Peer};
use canopy_config::control::{self, Command, ControlError};
use canopy_config::import::{parent_config, peer_import, ImportError};
use canopy_config::stats::PeerSnapshot;

use super::{not_running, print_listing_footer, refused, save, Paths, UserError};
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

pub(crate) async fn peer(paths: &Paths, action: PeerAction) -> anyhow::Result<ExitCode> {
    let db = paths.open_db().await?;
    let latest = db.in_force().await?;
    let mut config = latest.config.clone();
    match action {
        PeerAction::List => {
            for p in &config.peers {
                let mut options: Vec<String> = [
                    (p.proxy_only, "proxy-only"),
                    (p.no_query, "no-query"),
                    (p.multicast_responder, "multicast-responder"),
                    (p.allow_miss, "allow-miss"),
                    (p.deny_misses, "deny-misses"),
                    (p.default_parent, "default"),
                    (p.round_robin, "round-robin"),
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
            print_listing_footer(&db, &latest).await?;
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
            deny_misses,
            weight,
            default_parent,
            round_robin,
            connect_timeout_ms,
            max_conn,
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
            deny_misses,
            weight,
            default_parent,
            round_robin,
            connect_timeout_ms,
            max_conn,
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
