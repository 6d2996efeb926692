//! `canopy node list` and `set`: the console's Nodes page, and the settings one node of a
//! fleet holds apart from the fleet's versions.

use std::process::ExitCode;

use canopy_config::nodes::{default_node_name, Outcome};
use canopy_config::versions::VersionError;

use super::{refused, Paths, UserError};
use crate::cli::NodeAction;

pub(crate) async fn node(paths: &Paths, action: NodeAction) -> anyhow::Result<ExitCode> {
    let db = paths.open_db().await?;
    match action {
        NodeAction::List => {
            let nodes = db.nodes().await?;
            if nodes.is_empty() {
                println!("no proxy has started on {} yet", paths.database());
            }
            for view in nodes {
                let node = &view.node;
                let latest = match &view.latest {
                    Some(o) => match &o.outcome {
                        Outcome::Applied => format!("version {} applied", o.version),
                        Outcome::Rejected(why) => format!("version {} rejected: {why}", o.version),
                    },
                    None => "no version tried".to_owned(),
                };
                println!(
                    "{}  {}  version {} in force  listening on {}  last seen {}  ({latest})",
                    node.name,
                    node.state.as_str(),
                    node.config_version,
                    node.http_listen,
                    node.last_seen,
                );
                if let Some(why) = &view.own_settings_refused {
                    println!("  its own settings were not applied: {why}");
                }
            }
        }
        NodeAction::Set { key, value } => {
            let name = paths.node.clone().unwrap_or_else(default_node_name);
            match db.set_node_setting(&name, &key, &value).await {
                Ok(()) => println!(
                    "node {name}: {key} = {value}, applied by the node now over the version in \
                     force (see `canopy node list` if it cannot)"
                ),
                Err(VersionError::Invalid(errors)) => return Err(refused(errors)),
                Err(e @ VersionError::NotPerNode(_)) => return Err(UserError(e.to_string()).into()),
                Err(e) => return Err(e.into()),
            }
        }
        NodeAction::Canary { node } => {
            db.start_canary(&node).await?;
            println!(
                "node {node} is the canary: versions saved from now on go to it alone, until \
                 `canopy node rollout`"
            );
        }
        NodeAction::Rollout => match db.roll_out().await? {
            0 => println!("no version was held for a canary; the canary, if any, has ended"),
            held => println!("{held} version(s) held for the canary now go to every node"),
        },
    }
    Ok(ExitCode::SUCCESS)
}
