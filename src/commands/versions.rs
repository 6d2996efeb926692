//! `canopy config history`, `diff` and `restore`: the console's History page, from the shell.

use std::process::ExitCode;

use canopy_config::changes::{readable_diff, version_changes};
use canopy_config::control::{self, ControlError, ReloadReply};
use canopy_config::versions::{Db, VersionError};

use super::{author, refused, Paths, UserError};

pub(crate) async fn history(db: &Db, limit: i64) -> anyhow::Result<ExitCode> {
    let in_force = db.in_force().await?.id;
    // One more than shown: the oldest shown is told against the one before it.
    let versions = db.list(limit.max(1) + 1).await?;
    for (i, version) in versions.iter().enumerate().take(limit.max(1) as usize) {
        let mark = if version.id == in_force { "*" } else { " " };
        let state = match &version.state_reason {
            Some(reason) => format!("{} ({reason})", version.state.as_str()),
            None => version.state.as_str().to_owned(),
        };
        println!(
            "{mark}{:>4}  {}  {}  {state}",
            version.id,
            version
                .created_at
                .split('.')
                .next()
                .unwrap_or_default()
                .replacen('T', " ", 1),
            version.author,
        );
        for change in version_changes(version, versions.get(i + 1)) {
            println!("        {change}");
        }
    }
    println!("* in force");
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn diff(db: &Db, from: i64, to: i64) -> anyhow::Result<ExitCode> {
    let (from, to) = (version(db, from).await?, version(db, to).await?);
    let changes = readable_diff(&to.config, &from.config);
    if changes.is_empty() {
        println!("versions {} and {} say the same", from.id, to.id);
    }
    for change in changes {
        println!("{change}");
    }
    Ok(ExitCode::SUCCESS)
}

/// As the console's Restore: saved on top of the version in force, then applied.
pub(crate) async fn restore(paths: &Paths, db: &Db, id: i64) -> anyhow::Result<ExitCode> {
    let restored = version(db, id).await?;
    let in_force = db.in_force().await?;
    if restored.config == in_force.config {
        println!(
            "no change: version {id} says what version {} in force says",
            in_force.id
        );
        return Ok(ExitCode::SUCCESS);
    }
    let what = format!("restored version {id}");
    let saved = match db
        .save_labelled(&restored.config, &author(), &what, Some(in_force.id))
        .await
    {
        Ok(saved) => saved,
        Err(VersionError::Invalid(errors)) => return Err(refused(errors)),
        Err(e) => return Err(e.into()),
    };
    println!("config version {saved} saved: {what}");
    match control::call_typed::<ReloadReply>(&paths.control, control::Command::Reload).await {
        Ok(reply) => {
            println!(
                "config version {} applied in {} ms",
                reply.config_version, reply.elapsed_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ControlError::NotRunning(_)) => {
            println!("the proxy is not running; it starts on version {saved}");
            Ok(ExitCode::SUCCESS)
        }
        Err(ControlError::Refused(reason)) => {
            eprintln!("canopy: {reason}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

async fn version(db: &Db, id: i64) -> anyhow::Result<canopy_config::versions::ConfigVersion> {
    match db.get(id).await {
        Err(VersionError::NotFound(_)) => Err(UserError(format!(
            "there is no config version {id}; see `canopy config history`"
        ))
        .into()),
        other => Ok(other?),
    }
}
